"""The cheap paths: non-recording tracers, cached parents, keyed InMemoryMetrics, gauge rate limit.

Each fast path must give the same observable result as the general one.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aperion_event_bus._wiring import MetricsObserver
from aperion_event_bus.observability import event_tracer as et
from aperion_event_bus.observability.collector import MetricsCollector
from aperion_event_bus.observability.event_tracer import EventTracer
from aperion_event_bus.observability.metrics import CallbackMetrics, InMemoryMetrics

INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _incoming(traceparent: str = INCOMING, tracestate: str | None = None) -> Any:
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return TraceContextTextMapPropagator().extract(carrier)


def _current_traceparent() -> str | None:
    sc = trace.get_current_span().get_span_context()
    return et._format_traceparent(sc) if sc.is_valid else None


# -- non-recording tracer ---------------------------------------------------


def test_noop_publish_propagates_current_context(make_event):
    tracer = EventTracer(trace.NoOpTracerProvider())
    assert not tracer.recording
    token = otel_context.attach(_incoming(tracestate="k=v"))
    try:
        for _ in range(2):  # second time from the one-slot cache
            with tracer.publish_span("a.b", "evt_1", None) as (tp, ts):
                assert (tp, ts) == (INCOMING, "k=v")
        event = make_event("a.b", traceparent=INCOMING, tracestate="k=v")
        for _ in range(2):
            # the event's context is already current: the block runs unchanged
            with tracer.consume_span(event, "h") as span:
                assert not span.is_recording()
                assert _current_traceparent() == INCOMING
                with tracer.publish_span("c.d", "evt_2", None) as (tp, ts):
                    assert (tp, ts) == (INCOMING, "k=v")
    finally:
        otel_context.detach(token)
    with tracer.publish_span("a.b", "evt_1", None) as (tp, ts):
        assert (tp, ts) == (None, None)


def test_noop_consume_makes_event_context_current(make_event):
    tracer = EventTracer(trace.NoOpTracerProvider())
    event = make_event("a.b", traceparent=INCOMING)
    # nothing current (e.g. event from the store): the event's context flows to children
    with tracer.consume_span(event, "h"):
        assert _current_traceparent() == INCOMING
        with tracer.publish_span("c.d", "evt_2", None) as (tp, _):
            assert tp == INCOMING
    assert _current_traceparent() is None
    # a different context is current: the event's own context wins
    token = otel_context.attach(_incoming(OTHER))
    try:
        with tracer.consume_span(event, "h"):
            assert _current_traceparent() == INCOMING
        assert _current_traceparent() == OTHER
        # an event without context runs without one
        with tracer.consume_span(make_event("a.b"), "h"):
            assert _current_traceparent() is None
            with tracer.publish_span("c.d", "evt_2", None) as (tp, _):
                assert tp is None
        assert _current_traceparent() == OTHER
    finally:
        otel_context.detach(token)


def test_noop_handler_span_is_none_only_when_nothing_changes(make_event):
    """The engine skips the scope when the handler's context is already the event's."""
    tracer = EventTracer(trace.NoOpTracerProvider())
    assert tracer.handler_span(make_event("a.b"), "h") is None
    assert tracer.publish_context("a.b", "evt_1", None) == (None, None, None)
    event = make_event("a.b", traceparent=INCOMING)
    scope = tracer.handler_span(event, "h")  # nothing current: the event's context must be
    assert scope is not None
    with scope:
        assert _current_traceparent() == INCOMING
        assert tracer.handler_span(event, "h") is None
        tp, ts, trace_id = tracer.publish_context("c.d", "evt_2", None)
        assert (tp, ts, trace_id) == (INCOMING, None, INCOMING.split("-")[1])


def test_noop_exception_propagates(make_event):
    tracer = EventTracer(trace.NoOpTracerProvider())
    with pytest.raises(ValueError), tracer.consume_span(make_event("a.b"), "h"):
        raise ValueError("boom")
    with pytest.raises(ValueError), tracer.publish_span("a.b", "e", None):
        raise ValueError("boom")


async def test_noop_tracer_envelope_outside_and_inside_a_trace():
    """A non-recording tracer outside any trace adds nothing, so the bus builds the
    untraced envelope; inside a trace the event still carries the current context
    (and the trace id as its correlation id)."""
    from aperion_event_bus import EventBus

    async with EventBus(tracing=EventTracer(trace.NoOpTracerProvider())) as bus:
        assert bus.tracer is not None and bus.tracer.adds_nothing()
        plain = await bus.publish("a.b", {"i": 1}, wait=False)
        assert plain.event.traceparent is None and plain.event.tracestate is None
        assert plain.event.correlation_id == plain.event.event_id
        token = otel_context.attach(_incoming(tracestate="k=v"))
        try:
            assert not bus.tracer.adds_nothing()
            inside = await bus.publish("a.b", {"i": 2}, wait=False)
        finally:
            otel_context.detach(token)
        assert (inside.event.traceparent, inside.event.tracestate) == (INCOMING, "k=v")
        assert inside.event.correlation_id == INCOMING.split("-")[1]
        assert bus.publish_nowait("a.b", {"i": 3}).traceparent is None


def test_proxy_tracer_starts_recording_once_a_provider_is_set(
    monkeypatch, provider, exporter, make_event
):
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    tracer = EventTracer()  # global provider, none installed yet
    assert not tracer.recording
    with tracer.publish_span("a.b", "evt_1", None) as (tp, ts):
        assert (tp, ts) == (None, None)
    assert exporter.get_finished_spans() == ()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    with tracer.publish_span("a.b", "evt_1", None) as (tp, _):
        assert tp is not None
    assert tracer.recording
    assert [s.name for s in exporter.get_finished_spans()] == ["publish a.b"]


# -- recording tracer ---------------------------------------------------------


def test_local_parent_cache_matches_parsed_parent(provider, exporter, make_event, monkeypatch):
    tracer = EventTracer(provider)
    with tracer.publish_span("a.b", "evt_1", "c") as (tp, ts):
        pass
    assert tp in tracer._produced
    with tracer.consume_span(make_event("a.b", traceparent=tp, tracestate=ts), "h"):
        pass
    # the same, parsed from the string (as after a store round trip)
    other = EventTracer(provider)
    with other.consume_span(make_event("a.b", traceparent=tp, tracestate=ts), "h"):
        pass
    pub, cached, parsed = exporter.get_finished_spans()
    for proc in (cached, parsed):
        assert proc.parent == parsed.parent
        assert proc.parent.span_id == pub.context.span_id
        assert proc.parent.is_remote
        assert proc.context.trace_id == pub.context.trace_id


def test_produced_cache_is_bounded(provider, monkeypatch):
    monkeypatch.setattr(et, "_MAX_PRODUCED", 8)
    tracer = EventTracer(provider)
    for i in range(50):
        with tracer.publish_span("a.b", f"evt_{i}", "c"):
            pass
    assert len(tracer._produced) <= 8 and len(tracer._produced_old) <= 8


def test_produced_cache_keeps_the_previous_generation(provider, monkeypatch, make_event):
    monkeypatch.setattr(et, "_MAX_PRODUCED", 8)
    tracer = EventTracer(provider)
    produced = [tracer.publish_context("a.b", f"evt_{i}", "c") for i in range(12)]
    monkeypatch.setattr(tracer, "_propagator", None)  # parsing would fail now
    for tp, ts, _ in (produced[0], produced[-1]):  # old and young generation
        with tracer.consume_span(make_event("a.b", traceparent=tp, tracestate=ts), "h") as span:
            assert span.parent is not None and span.parent.span_id == int(tp.split("-")[2], 16)


def _parsed_parent(traceparent: str, tracestate: str | None = None) -> Any:
    return trace.get_current_span(_incoming(traceparent, tracestate)).get_span_context()


@pytest.mark.parametrize("flags", [0, 1, 2, 0xFF])
@pytest.mark.parametrize(
    ("trace_id", "span_id"),
    [(1, 1), (2**128 - 1, 2**64 - 1), (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xF067AA0BA902B7)],
)
def test_w3c_strings_match_the_reference_and_the_propagator(trace_id, span_id, flags):
    state = trace.TraceState([("k", "v"), ("a", "1")])
    ctx = trace.SpanContext(trace_id, span_id, False, trace.TraceFlags(flags), state)
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(
        carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(ctx))
    )
    tracer = EventTracer(trace.NoOpTracerProvider())
    for fields in (tracer._fields(ctx), et._fields_of(ctx)):
        tp, ts, trace_hex = et._w3c_strings(fields, trace.DEFAULT_TRACE_STATE)
        assert tp == et._format_traceparent(ctx) == carrier["traceparent"]
        assert ts == carrier["tracestate"]
        assert trace_hex == f"{trace_id:032x}"
    empty = trace.SpanContext(trace_id, span_id, False, trace.TraceFlags(flags))
    assert et._w3c_strings(et._fields_of(empty), trace.DEFAULT_TRACE_STATE)[1] is None


def test_remote_twin_is_the_parsed_context():
    tracer = EventTracer(trace.NoOpTracerProvider())
    assert tracer._tuple_sc is trace.SpanContext  # the API's tuple layout was recognised
    state = trace.TraceState([("k", "v")])
    ctx = trace.SpanContext(0xABC, 0xDEF, False, trace.TraceFlags(1), state)
    remote = tracer._remote(tracer._fields(ctx))
    assert type(remote) is trace.SpanContext
    assert remote == _parsed_parent(et._format_traceparent(ctx), "k=v")
    assert (remote.is_remote, remote.is_valid, remote.trace_state) == (True, True, state)


def test_without_the_tuple_layout_the_properties_give_the_same_spans(
    provider, exporter, make_event
):
    """A SpanContext type the tracer does not recognise takes the property path."""
    fast, slow = EventTracer(provider), EventTracer(provider)
    slow._tuple_sc = None
    for tracer in (fast, slow):
        tp, ts, trace_hex = tracer.publish_context("a.b", "evt_1", None)
        assert tp is not None and trace_hex == tp.split("-")[1]
        with tracer.consume_span(make_event("a.b", traceparent=tp, tracestate=ts), "h") as span:
            assert span.parent == _parsed_parent(tp, ts)
    pub_fast, proc_fast, pub_slow, proc_slow = exporter.get_finished_spans()
    for pub, proc in ((pub_fast, proc_fast), (pub_slow, proc_slow)):
        assert proc.parent.span_id == pub.context.span_id and proc.parent.is_remote
        assert pub.attributes[et.ATTR_CONVERSATION_ID] == f"{pub.context.trace_id:032x}"


def test_cached_parent_never_serves_an_event_with_other_strings(provider, make_event):
    """The produced-span cache is keyed by the exact W3C strings: an event whose
    traceparent or tracestate differs (built with explicit strings, replayed from
    a store or received from a transport) gets the parent its strings give."""
    tracer = EventTracer(provider)
    tp, ts, _ = tracer.publish_context("a.b", "evt_1", "c")
    assert tp is not None and tp in tracer._produced
    version, trace_hex, span_hex, flags = tp.split("-")
    cases = [
        (f"{version}-{trace_hex}-{int(span_hex, 16) + 1:016x}-{flags}", ts),  # other span
        (f"{version}-{trace_hex}-{span_hex}-00", ts),  # other flags
        (tp, "vendor=x"),  # same traceparent, other tracestate
        (OTHER, None),  # another trace
    ]
    for traceparent, tracestate in cases:
        parent = tracer._context_from(traceparent, tracestate)
        assert trace.get_current_span(parent).get_span_context() == _parsed_parent(
            traceparent, tracestate
        )
        event = make_event("a.b", traceparent=traceparent, tracestate=tracestate)
        with tracer.consume_span(event, "h") as span:
            assert span.get_span_context().trace_id == int(traceparent.split("-")[1], 16)
    # the very strings again, as new objects (a replayed or transported event)
    replayed = make_event("a.b", traceparent="".join(tp), tracestate=ts)
    with tracer.consume_span(replayed, "h") as span:
        assert span.parent == _parsed_parent(tp, ts)
    # an invalid traceparent never picks up a cached parent: a root span
    with tracer.consume_span(make_event("a.b", traceparent=tp[:-1] + "x"), "h") as span:
        assert span.parent is None


def test_producer_parent_is_the_current_context(provider, exporter):
    """The producer span is started with the current Context passed explicitly:
    the same parent as letting the SDK read it."""
    tracer = EventTracer(provider)
    token = otel_context.attach(_incoming(tracestate="k=v"))
    try:
        tp, ts, trace_hex = tracer.publish_context("a.b", "evt_1", None)
    finally:
        otel_context.detach(token)
    (pub,) = exporter.get_finished_spans()
    assert pub.parent == _parsed_parent(INCOMING, "k=v")
    assert trace_hex == INCOMING.split("-")[1] and ts == "k=v"
    assert tp == et._format_traceparent(pub.context)


# -- metrics ------------------------------------------------------------------


class _GenericInMemory(InMemoryMetrics):
    """A subclass: the collector uses the public methods (the general path)."""


def _workload(collector: MetricsCollector) -> None:
    for i in range(30):
        collector.record_event_emitted("a.b", source="svc")
        collector.record_handler_execution("a.b", "h", 0.001 * i, success=i % 3 != 0)
    collector.record_event_emitted("a.b", latency_seconds=0.002)
    collector.record_handler_timeout("a.b", "h", 1.5)
    collector.record_handler_retry("a.b", "h")
    collector.record_event_failed("a.b")
    collector.record_event_dropped("a.b")


def test_keyed_in_memory_path_matches_general_path():
    fast, general = InMemoryMetrics(seed=1), _GenericInMemory(seed=1)
    c_fast, c_general = MetricsCollector(fast), MetricsCollector(general)
    assert c_fast._mem is fast and c_general._mem is None
    _workload(c_fast)
    _workload(c_general)
    assert fast.snapshot() == general.snapshot()
    assert (
        fast.get_counter(
            "event_bus_handler_executions_total",
            {"event_type": "a.b", "handler_name": "h", "status": "error"},
        )
        == 10
    )


def test_backend_swap_drops_cached_keys():
    first, second = InMemoryMetrics(), InMemoryMetrics()
    c = MetricsCollector(first, prefix="one")
    c.record_handler_execution("a.b", "h", 0.1)
    c.backend = second
    c.record_handler_execution("a.b", "h", 0.1)
    c.record_event_emitted("a.b")
    assert second.get_counter("one_events_emitted_total", {"event_type": "a.b"}) == 1
    tags = {"event_type": "a.b", "handler_name": "h", "status": "success"}
    assert first.get_counter("one_handler_executions_total", tags) == 1
    assert second.get_counter("one_handler_executions_total", tags) == 1


def test_pending_gauge_is_rate_limited_and_flushed():
    calls: list[tuple[str, float]] = []
    c = MetricsCollector(
        CallbackMetrics(lambda kind, name, value, tags: calls.append((name, value))),
        gauge_interval=3600,
    )
    c.update_pending_count(1)
    c.update_pending_count(1)  # unchanged: not forwarded
    c.update_pending_count(2)  # within the interval: held back
    assert calls == [("event_bus_pending_events", 1.0)]
    assert c.get_snapshot()["pending_events"] == 2  # exact, and flushes
    assert calls[-1] == ("event_bus_pending_events", 2.0)
    c.flush_gauges()  # nothing held back
    assert len(calls) == 2
    every = MetricsCollector(InMemoryMetrics(), gauge_interval=0)
    for n in (1, 2, 3):
        every.update_pending_count(n)
        backend = every.backend
        assert isinstance(backend, InMemoryMetrics)
        assert backend.get_gauge("event_bus_pending_events") == n


def test_metrics_observer_rebinds_collector(make_event):
    first, second = MetricsCollector(InMemoryMetrics()), MetricsCollector(InMemoryMetrics())
    observer = MetricsObserver(first)

    class Sub:
        handler_name = "h"

    event = make_event("a.b")
    observer.handler_finished(Sub(), event, 0.1, None, False, 1)  # type: ignore[arg-type]
    observer.collector = second
    observer.handler_finished(Sub(), event, 0.1, ValueError(), False, 1)  # type: ignore[arg-type]
    observer.handler_finished(Sub(), event, 0.1, TimeoutError(), True, 1)  # type: ignore[arg-type]
    observer.handler_retry(Sub(), event, 1)  # type: ignore[arg-type]
    assert observer.collector is second
    h1 = first.get_snapshot()["handler_stats"]["h"]
    h2 = second.get_snapshot()["handler_stats"]["h"]
    assert (h1["success_count"], h1["failure_count"]) == (1, 0)
    assert (h2["failure_count"], h2["timeout_count"], h2["retry_count"]) == (2, 1, 1)
    assert second.get_snapshot()["total_events_failed"] == 2
