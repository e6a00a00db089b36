"""Correlation helpers (1.x) and header handling."""

from __future__ import annotations

import uuid

import pytest
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
from aperion_event_bus.context import parse_traceparent
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


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize("header", ["X-Correlation-ID", "x-request-id", "X-REQUEST-ID"])
@pytest.mark.parametrize(
    "bad", ["evil\r\n", "evil\n", "evil\r", "\nevil", " evil\r\n ", "ev\r\nil", "evil\x0b", "evil\x85"]
)
def test_cr_lf_anywhere_makes_a_header_value_invalid(header: str, bad: str) -> None:
    """Only spaces and tabs around a value are ignored: a CR/LF (header injection)
    or other control character anywhere gives a fresh id, never the text before it."""
    value = extract_correlation_id_from_headers({header: bad})
    assert "evil" not in value and "ev" not in value
    uuid.UUID(value)
    assert extract_correlation_id_from_headers({header: bad.encode("latin-1")}) != "evil"


def test_spaces_and_tabs_around_a_header_value_are_ignored() -> None:
    assert extract_correlation_id_from_headers({"X-Correlation-ID": " \tok-1\t "}) == "ok-1"
    assert extract_correlation_id_from_headers({"X-Request-ID": "  req-2"}) == "req-2"
    assert extract_correlation_id_from_headers({"traceparent": f" {TRACEPARENT}\t"}) == TRACEPARENT[3:35]


@pytest.mark.parametrize(
    "bad",
    [
        TRACEPARENT + "\r\n",
        TRACEPARENT + "\n",
        "01" + TRACEPARENT[2:] + "-x\r\nEvil",
        "01" + TRACEPARENT[2:] + "-x\x00y",
        "\r\n" + TRACEPARENT,
    ],
)
def test_traceparent_with_cr_lf_or_control_characters_is_ignored(bad: str) -> None:
    assert parse_traceparent(bad) is None
    value = extract_correlation_id_from_headers({"traceparent": bad})
    assert value != TRACEPARENT[3:35]
    uuid.UUID(value)


header_text = st.text(max_size=140) | st.text(
    alphabet=st.sampled_from("ab-_.1 \t\r\n\x00\x7f\u2028é"), max_size=140
)


@given(
    name=st.sampled_from(["X-Correlation-ID", "x-request-id", "traceparent", "TraceParent"]),
    value=header_text | header_text.map(lambda t: "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01" + t),
    as_bytes=st.booleans(),
)
def test_any_header_text_gives_a_safe_id(name: str, value: str, as_bytes: bool) -> None:
    """Whatever the header holds: the result is printable ASCII, 1-128 characters,
    without CR/LF, and when it is the header's text, that text had no CR/LF at all."""
    raw: object = value.encode("utf-8") if as_bytes else value
    result = extract_correlation_id_from_headers({name: raw})  # type: ignore[dict-item]
    assert result.isascii() and result.isprintable() and 0 < len(result) <= 128
    assert "\r" not in result and "\n" not in result
    if result in value:
        assert "\r" not in value and "\n" not in value
