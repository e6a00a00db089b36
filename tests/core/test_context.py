"""Correlation helpers (1.x) and header handling."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from aperion_event_bus import (
    CORRELATION_ID_HEADER,
    CorrelationContext,
    add_correlation_to_log_extra,
    clear_correlation_id,
    extract_correlation_id_from_headers,
    generate_correlation_id,
    get_correlation_id,
    get_headers_with_correlation,
    set_correlation_id,
)
from aperion_event_bus.correlation import CorrelationContext as Legacy

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_basics() -> None:
    assert CORRELATION_ID_HEADER == "X-Correlation-ID"
    uuid.UUID(generate_correlation_id())
    clear_correlation_id()
    assert get_correlation_id() is None
    assert get_headers_with_correlation() == {}
    set_correlation_id("abc")
    assert get_headers_with_correlation() == {"X-Correlation-ID": "abc"}
    extra = {"k": 1}
    merged = add_correlation_to_log_extra(extra)
    assert merged == {"k": 1, "correlation_id": "abc"} and merged is not extra
    clear_correlation_id()
    assert Legacy is CorrelationContext


def test_context_manager_restores_previous() -> None:
    set_correlation_id("outer")
    with CorrelationContext() as cid:
        assert get_correlation_id() == cid != "outer"
        with CorrelationContext("inner") as inner:
            assert inner == "inner" == get_correlation_id()
        assert get_correlation_id() == cid
    assert get_correlation_id() == "outer"
    clear_correlation_id()


def test_header_extraction_order_and_case() -> None:
    assert extract_correlation_id_from_headers({"x-correlation-id": "a1"}) == "a1"
    assert extract_correlation_id_from_headers({"X-Request-ID": "r1"}) == "r1"
    assert (
        extract_correlation_id_from_headers({"traceparent": TRACEPARENT})
        == "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    both = {"X-Correlation-ID": "c", "X-Request-ID": "r", "traceparent": TRACEPARENT}
    assert extract_correlation_id_from_headers(both) == "c"
    fresh = extract_correlation_id_from_headers({})
    uuid.UUID(fresh)


def test_bad_header_values_are_replaced() -> None:
    for bad in ["evil\r\nSet-Cookie: x", "x" * 500, "", "tab\there", "ünïcode"]:
        value = extract_correlation_id_from_headers({"X-Correlation-ID": bad})
        assert value != bad
        uuid.UUID(value)
    assert extract_correlation_id_from_headers({"traceparent": "garbage"}) != "garbage"


@given(st.text(max_size=200))
def test_extracted_ids_are_always_safe(value: str) -> None:
    result = extract_correlation_id_from_headers({"X-Correlation-ID": value})
    assert result.isascii() and result.isprintable() and 0 < len(result) <= 128
    assert "\r" not in result and "\n" not in result
