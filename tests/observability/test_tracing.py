"""The 1.x telemetry functions and the W3C string helpers."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from aperion_event_bus import telemetry
from aperion_event_bus.observability import (
    add_event_to_span,
    extract_trace_context_from_headers,
    get_current_span,
    get_trace_correlation_id,
    get_tracer,
    inject_trace_context_to_headers,
    is_otel_available,
    parse_traceparent,
    set_span_attribute,
    trace_headers_from,
    trace_id_from_traceparent,
    traced,
)

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (TP, True),
        ("  " + TP + " ", True),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", True),  # future version
        (TP + "-extra", False),  # version 00 has exactly four fields
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", False),
        ("", False),
        (None, False),
    ],
)
def test_parse_traceparent(value, ok):
    assert (parse_traceparent(value) is not None) is ok


def test_trace_id_and_headers_helpers():
    assert trace_id_from_traceparent(TP) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_from_traceparent("nope") is None
    assert trace_headers_from({"TRACEPARENT": TP, "TraceState": "a=1"}) == (TP, "a=1")
    assert trace_headers_from({"traceparent": "bad", "tracestate": "a=1"}) == (None, None)
    assert trace_headers_from({}) == (None, None)


def test_availability_and_tracer():
    assert is_otel_available() is True
    assert telemetry.OTEL_AVAILABLE is True
    assert get_tracer() is not None
    assert get_current_span() is not None  # INVALID_SPAN outside any span


def test_trace_correlation_id_and_inject(provider):
    assert get_trace_correlation_id() is None
    assert inject_trace_context_to_headers({}) == {}
    tracer = trace.get_tracer("t", tracer_provider=provider)
    with tracer.start_as_current_span("op") as span:
        ctx = span.get_span_context()
        assert get_trace_correlation_id() == format(ctx.trace_id, "032x")
        headers: dict[str, str] = {"x": "1"}
        out = inject_trace_context_to_headers(headers)
        assert out is headers
        assert (
            headers["traceparent"]
            == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
        )
        assert "tracestate" not in headers


def test_extract_roundtrip_with_tracestate(provider):
    ctx = extract_trace_context_from_headers({"traceparent": TP, "tracestate": "k=v"})
    assert ctx is not None
    span_ctx = trace.get_current_span(ctx).get_span_context()
    assert span_ctx.trace_id == int("4bf92f3577b34da6a3ce929d0e0e4736", 16)
    assert span_ctx.is_remote
    token = otel_context.attach(ctx)
    try:
        assert get_trace_correlation_id() == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert inject_trace_context_to_headers({}) == {"traceparent": TP, "tracestate": "k=v"}
    finally:
        otel_context.detach(token)
    assert extract_trace_context_from_headers({}) is None
    assert extract_trace_context_from_headers({"traceparent": "junk"}) is None


def test_span_helpers(provider, exporter):
    add_event_to_span("ignored")  # no current span: no-op
    set_span_attribute("ignored", 1)
    tracer = trace.get_tracer("t", tracer_provider=provider)
    with tracer.start_as_current_span("op"):
        add_event_to_span("checkpoint", {"step": 2})
        set_span_attribute("k", "v")
    (span,) = exporter.get_finished_spans()
    assert span.attributes["k"] == "v"
    assert span.events[0].name == "checkpoint" and span.events[0].attributes["step"] == 2


def test_traced_sync_and_async(global_exporter):
    @traced()
    def add(a: int, b: int) -> int:
        return a + b

    @traced("custom", kind=SpanKind.CLIENT, attributes={"peer": "db"})
    async def fetch() -> str:
        await asyncio.sleep(0)
        return "ok"

    @traced()
    def fail() -> None:
        raise RuntimeError("nope")

    assert add(1, 2) == 3
    assert add.__name__ == "add"
    assert asyncio.run(fetch()) == "ok"
    assert asyncio.iscoroutinefunction(fetch)
    with pytest.raises(RuntimeError):
        fail()
    spans = {s.name: s for s in global_exporter.get_finished_spans()}
    assert set(spans) == {"add", "custom", "fail"}  # function __name__ by default (1.x)
    assert spans["custom"].kind is SpanKind.CLIENT
    assert spans["custom"].attributes["peer"] == "db"
    assert spans["fail"].status.status_code is StatusCode.ERROR


def test_1x_module_path_reexports():
    from aperion_event_bus import telemetry as t

    for name in (
        "is_otel_available",
        "get_tracer",
        "get_current_span",
        "get_trace_correlation_id",
        "inject_trace_context_to_headers",
        "extract_trace_context_from_headers",
        "traced",
        "add_event_to_span",
        "set_span_attribute",
    ):
        assert callable(getattr(t, name))
    with pytest.raises(AttributeError):
        _ = t.NOT_A_NAME  # type: ignore[attr-defined]


def test_inject_matches_the_otel_propagator(provider):
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    ctx = extract_trace_context_from_headers({"traceparent": TP, "tracestate": "a=1,b=2"})
    assert ctx is not None
    tracer = trace.get_tracer("t", tracer_provider=provider)
    with tracer.start_as_current_span("child", context=ctx):
        ours = inject_trace_context_to_headers({})
        theirs: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(theirs)
    assert ours == theirs
    assert ours["tracestate"] == "a=1,b=2"
