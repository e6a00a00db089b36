"""EventTracer: producer/consumer spans, W3C parent links, redaction of errors and payloads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from aperion_event_bus.errors import ConfigurationError
from aperion_event_bus.observability import (
    EventTracer,
    extract_trace_context_from_headers,
    trace_headers_from,
    trace_id_from_traceparent,
)
from aperion_event_bus.observability import event_tracer as et

INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _by_name(spans: Any) -> dict[str, Any]:
    return {s.name: s for s in spans}


def _publish(
    tracer: EventTracer, make_event: Any, event_type: str, event_id: str, **kw: Any
) -> Any:
    """What the engine does: producer span, store the W3C strings on the event."""
    correlation_id = kw.pop("correlation_id", "corr-1")
    causation_id = kw.pop("causation_id", None)
    with tracer.publish_span(event_type, event_id, correlation_id, **kw) as (tp, ts):
        return make_event(
            event_type,
            {"n": 1},
            event_id=event_id,
            correlation_id=correlation_id,
            causation_id=causation_id,
            traceparent=tp,
            tracestate=ts,
        )


def _assert_chain(spans: Any) -> None:
    s = _by_name(spans)
    pub1, proc1 = s["publish order.created"], s["process order.created"]
    pub2, proc2 = s["publish invoice.requested"], s["process invoice.requested"]
    assert len({sp.context.trace_id for sp in spans}) == 1
    assert pub1.kind is SpanKind.PRODUCER and proc1.kind is SpanKind.CONSUMER
    assert proc1.parent.span_id == pub1.context.span_id
    assert pub2.parent.span_id == proc1.context.span_id
    assert proc2.parent.span_id == pub2.context.span_id


def test_publish_consume_nested_publish_is_one_trace(provider, exporter, make_event):
    tracer = EventTracer(provider)
    first = _publish(tracer, make_event, "order.created", "evt_1")
    with tracer.consume_span(first, "on_order"):
        child = _publish(
            tracer, make_event, "invoice.requested", "evt_2", causation_id=first.event_id
        )
    with tracer.consume_span(child, "on_invoice"):
        pass
    spans = exporter.get_finished_spans()
    assert len(spans) == 4
    _assert_chain(spans)


def test_chain_across_threads(provider, exporter, make_event):
    """Consumers on pool threads (fresh, empty context) still link through the event."""
    tracer = EventTracer(provider)
    first = _publish(tracer, make_event, "order.created", "evt_1")

    def handle_first() -> Any:
        assert not trace.get_current_span().get_span_context().is_valid
        with tracer.consume_span(first, "on_order"):
            return _publish(tracer, make_event, "invoice.requested", "evt_2")

    def handle_child(event: Any) -> None:
        with tracer.consume_span(event, "on_invoice"):
            pass

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        child = pool.submit(handle_first).result()
        t = threading.Thread(target=handle_child, args=(child,))
        t.start()
        t.join()
    _assert_chain(exporter.get_finished_spans())


async def test_chain_across_async_tasks(provider, exporter, make_event):
    tracer = EventTracer(provider)
    first = _publish(tracer, make_event, "order.created", "evt_1")

    async def handle(event: Any, name: str) -> Any:
        await asyncio.sleep(0)
        with tracer.consume_span(event, name):
            await asyncio.sleep(0)
            if event.event_type == "order.created":
                return _publish(tracer, make_event, "invoice.requested", "evt_2")
        return None

    # a task started with an empty context, like a bus worker task
    child = await asyncio.create_task(handle(first, "a"), context=contextvars.Context())
    await asyncio.create_task(handle(child, "b"), context=contextvars.Context())
    _assert_chain(exporter.get_finished_spans())


def test_consume_span_is_current_and_detached_after(provider, make_event):
    tracer = EventTracer(provider)
    event = _publish(tracer, make_event, "order.created", "evt_1")
    before = otel_context.get_current()
    with tracer.consume_span(event, "h") as span:
        assert trace.get_current_span() is span
        assert tracer.trace_id_for_correlation() == trace_id_from_traceparent(event.traceparent)
    assert otel_context.get_current() == before
    assert tracer.trace_id_for_correlation() is None


def test_consume_span_left_in_another_context_is_ended_and_logged(
    provider, exporter, make_event, caplog
):
    """Restoring the context fails like OpenTelemetry's detach (logged, not raised)."""
    tracer = EventTracer(provider)
    scope = tracer.consume_span(make_event("a.b"), "h")
    contextvars.copy_context().run(scope.__enter__)
    scope.__exit__(None, None, None)
    assert "Failed to detach context" in caplog.text
    assert [s.name for s in exporter.get_finished_spans()] == ["process a.b"]


def test_incoming_traceparent_header_becomes_parent(provider, exporter, make_event):
    tracer = EventTracer(provider)
    headers = {"Traceparent": INCOMING, "tracestate": "vendor=abc"}
    tp, ts = trace_headers_from(headers)
    event = _publish(
        tracer, make_event, "order.created", "evt_1", parent_traceparent=tp, parent_tracestate=ts
    )
    assert trace_id_from_traceparent(event.traceparent) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert event.tracestate == "vendor=abc"
    with tracer.consume_span(event, "h"):
        pass
    s = _by_name(exporter.get_finished_spans())
    pub = s["publish order.created"]
    assert pub.parent.span_id == 0x00F067AA0BA902B7
    assert pub.parent.is_remote
    assert s["process order.created"].parent.span_id == pub.context.span_id


def test_incoming_context_attached_by_middleware_becomes_parent(provider, exporter, make_event):
    """An ASGI middleware attaches extract_trace_context_from_headers(); publish picks it up."""
    tracer = EventTracer(provider)
    ctx = extract_trace_context_from_headers({"traceparent": INCOMING})
    assert ctx is not None
    token = otel_context.attach(ctx)
    try:
        assert tracer.trace_id_for_correlation() == "4bf92f3577b34da6a3ce929d0e0e4736"
        _publish(tracer, make_event, "order.created", "evt_1")
    finally:
        otel_context.detach(token)
    (pub,) = exporter.get_finished_spans()
    assert pub.parent.span_id == 0x00F067AA0BA902B7


def test_invalid_parent_traceparent_falls_back_to_current_context(provider, exporter, make_event):
    tracer = EventTracer(provider)
    event = _publish(tracer, make_event, "order.created", "evt_1", parent_traceparent="garbage")
    assert event.traceparent is not None
    (pub,) = exporter.get_finished_spans()
    assert pub.parent is None


def test_semantic_convention_attributes(provider, exporter, make_event):
    tracer = EventTracer(provider)
    event = _publish(tracer, make_event, "order.created", "evt_1", correlation_id="corr-9")
    event.source = "billing"
    event.causation_id = "evt_0"
    with tracer.consume_span(event, "on_order"):
        pass
    s = _by_name(exporter.get_finished_spans())
    pub, proc = s["publish order.created"].attributes, s["process order.created"].attributes
    assert pub["messaging.system"] == "aperion_event_bus"
    assert pub["messaging.destination.name"] == "order.created"
    assert pub["messaging.operation.type"] == "send"
    assert pub["messaging.operation.name"] == "publish"
    assert pub["messaging.message.id"] == "evt_1"
    assert pub["messaging.message.conversation_id"] == "corr-9"
    assert proc["messaging.operation.type"] == "process"
    assert proc["messaging.destination.subscription.name"] == "on_order"
    assert proc["aperion_event_bus.causation_id"] == "evt_0"
    assert proc["aperion_event_bus.source"] == "billing"
    assert not any(k.startswith("aperion_event_bus.payload") for k in {*pub, *proc})


def test_attribute_names_match_installed_semconv():
    semconv = pytest.importorskip(
        "opentelemetry.semconv._incubating.attributes.messaging_attributes"
    )
    assert et.ATTR_SYSTEM == semconv.MESSAGING_SYSTEM
    assert et.ATTR_DESTINATION == semconv.MESSAGING_DESTINATION_NAME
    assert et.ATTR_OPERATION_TYPE == semconv.MESSAGING_OPERATION_TYPE
    assert et.ATTR_OPERATION_NAME == semconv.MESSAGING_OPERATION_NAME
    assert et.ATTR_MESSAGE_ID == semconv.MESSAGING_MESSAGE_ID
    assert et.ATTR_CONVERSATION_ID == semconv.MESSAGING_MESSAGE_CONVERSATION_ID
    assert et.ATTR_SUBSCRIPTION == semconv.MESSAGING_DESTINATION_SUBSCRIPTION_NAME
    values = semconv.MessagingOperationTypeValues
    assert values.SEND.value == et.OPERATION_SEND
    assert values.PROCESS.value == et.OPERATION_PROCESS


def test_missing_correlation_id_uses_trace_id(provider, exporter, make_event):
    tracer = EventTracer(provider)
    assert tracer.trace_id_for_correlation() is None  # no current span
    event = _publish(tracer, make_event, "order.created", "evt_1", correlation_id=None)
    (pub,) = exporter.get_finished_spans()
    trace_id = trace_id_from_traceparent(event.traceparent)
    assert pub.attributes["messaging.message.conversation_id"] == trace_id


def test_publish_context_is_the_producer_span_started_and_ended(provider, exporter):
    """The engine's one-call producer span: same span as publish_span, never current."""
    tracer = EventTracer(provider)
    before = otel_context.get_current()
    tp, ts, trace_id = tracer.publish_context("order.created", "evt_1", "corr-1")
    assert otel_context.get_current() == before
    with tracer.publish_span("order.created", "evt_2", "corr-1"):
        pass
    one, two = exporter.get_finished_spans()
    assert (
        (one.name, one.kind) == (two.name, two.kind) == ("publish order.created", SpanKind.PRODUCER)
    )
    assert {**one.attributes, "messaging.message.id": "evt_2"} == dict(two.attributes)
    assert tp == et._format_traceparent(one.context) and ts is None
    assert trace_id == trace_id_from_traceparent(tp) == f"{one.context.trace_id:032x}"
    # no correlation id: the trace id is the conversation id (the engine uses it too)
    _, _, trace_id = tracer.publish_context("order.created", "evt_3", None)
    last = exporter.get_finished_spans()[-1]
    assert last.attributes["messaging.message.conversation_id"] == trace_id


async def test_engine_spans_follow_semantic_conventions(provider, exporter):
    from aperion_event_bus import EventBus

    async with EventBus(tracing=EventTracer(provider)) as bus:

        async def on_order(e: Any) -> None:
            return None

        bus.on("order.created", on_order)
        result = await bus.publish("order.created", {"n": 1}, source="shop")
    event = result.event
    s = _by_name(exporter.get_finished_spans())
    pub, proc = s["publish order.created"], s["process order.created"]
    assert (pub.kind, proc.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert proc.parent.span_id == pub.context.span_id and proc.parent.is_remote
    assert event.traceparent == et._format_traceparent(pub.context)
    common = {
        "messaging.system": "aperion_event_bus",
        "messaging.destination.name": "order.created",
        "messaging.message.id": event.event_id,
        "messaging.message.conversation_id": event.correlation_id,
    }
    assert dict(pub.attributes) == {
        **common,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
    }
    assert dict(proc.attributes) == {
        **common,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.subscription.name": proc.attributes[
            "messaging.destination.subscription.name"
        ],
        "aperion_event_bus.source": "shop",
    }
    assert "on_order" in proc.attributes["messaging.destination.subscription.name"]
    assert event.correlation_id == trace_id_from_traceparent(event.traceparent)


def test_consumer_error_is_recorded_redacted_and_reraised(provider, exporter, make_event, redactor):
    tracer = EventTracer(provider, redactor=redactor)
    event = _publish(tracer, make_event, "user.signed_up", "evt_1")
    with pytest.raises(ValueError), tracer.consume_span(event, "h"):
        raise ValueError("cannot mail alice@example.com the secret token")
    proc = _by_name(exporter.get_finished_spans())["process user.signed_up"]
    assert proc.status.status_code is StatusCode.ERROR
    assert "alice@example.com" not in (proc.status.description or "")
    assert proc.attributes["error.type"] == "ValueError"
    (exc_event,) = [e for e in proc.events if e.name == "exception"]
    text = exc_event.attributes["exception.message"] + exc_event.attributes["exception.stacktrace"]
    assert "alice@example.com" not in text and "secret" not in text
    assert "[REDACTED]" in exc_event.attributes["exception.message"]
    assert exc_event.attributes["exception.type"] == "ValueError"


def test_record_error_and_timeout_without_raising(provider, exporter, make_event):
    tracer = EventTracer(provider)
    event = _publish(tracer, make_event, "a.b", "evt_1")
    with tracer.consume_span(event, "h1") as span:
        tracer.record_error(span, RuntimeError("boom"))
    with tracer.consume_span(event, "h2") as span:
        tracer.record_timeout(span, 2.5)
    spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR, StatusCode.ERROR]
    assert spans[0].status.description == "RuntimeError: boom"
    assert spans[1].attributes["error.type"] == "timeout"
    assert "2.5s" in (spans[1].status.description or "")


async def test_cancellation_sets_error_without_details(provider, exporter, make_event):
    tracer = EventTracer(provider)
    event = _publish(tracer, make_event, "a.b", "evt_1")

    async def handler() -> None:
        with tracer.consume_span(event, "slow"):
            await asyncio.sleep(10)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(handler(), 0.01)
    proc = _by_name(exporter.get_finished_spans())["process a.b"]
    assert proc.status.status_code is StatusCode.ERROR
    assert proc.attributes["error.type"] == "asyncio.exceptions.CancelledError"


def test_publish_error_recorded(provider, exporter, redactor):
    tracer = EventTracer(provider, redactor=redactor)
    with pytest.raises(KeyError), tracer.publish_span("a.b", "evt_1", None):
        raise KeyError("secret")
    (pub,) = exporter.get_finished_spans()
    assert pub.status.status_code is StatusCode.ERROR
    assert "secret" not in (pub.status.description or "")


def test_payload_only_with_opt_in_and_redacted(provider, exporter, make_event, redactor):
    with pytest.raises(ConfigurationError):
        EventTracer(provider, include_payload=True)
    tracer = EventTracer(provider, include_payload=True, redactor=redactor)
    payload = {"email": "bob@example.com", "count": 3, "items": ["x", "y"]}
    with tracer.publish_span("user.created", "evt_1", "c", payload=payload) as (tp, ts):
        pass
    event = make_event("user.created", payload, traceparent=tp, tracestate=ts)
    with tracer.consume_span(event, "h"):
        pass
    for span in exporter.get_finished_spans():
        attrs = span.attributes
        assert attrs["aperion_event_bus.payload.email"] == "[REDACTED]"
        assert attrs["aperion_event_bus.payload.count"] == 3
        assert attrs["aperion_event_bus.payload.items"] == '["x", "y"]'
        assert "bob@example.com" not in str(dict(attrs))


def test_redactor_failure_never_leaks(provider, exporter, make_event):
    class Broken:
        def redact_string(self, text: str) -> str:
            raise RuntimeError("broken")

        def redact(self, obj: Any) -> Any:
            raise RuntimeError("broken")

    tracer = EventTracer(provider, include_payload=True, redactor=Broken())
    event = make_event("a.b", {"email": "bob@example.com"})
    with pytest.raises(ValueError), tracer.consume_span(event, "h"):
        raise ValueError("bob@example.com")
    (span,) = exporter.get_finished_spans()
    assert "bob@example.com" not in repr(span.to_json())


def test_event_without_traceparent_gets_root_span(provider, exporter, make_event):
    tracer = EventTracer(provider)
    outer = trace.get_tracer("test", tracer_provider=provider)
    with outer.start_as_current_span("unrelated"), tracer.consume_span(make_event("a.b"), "h"):
        pass
    proc = _by_name(exporter.get_finished_spans())["process a.b"]
    assert proc.parent is None


def test_noop_provider_passes_parent_through(make_event):
    tracer = EventTracer(trace.NoOpTracerProvider())
    with tracer.publish_span("a.b", "evt_1", None, parent_traceparent=INCOMING) as (tp, ts):
        assert tp == INCOMING and ts is None
    with tracer.publish_span("a.b", "evt_1", None) as (tp, ts):
        assert tp is None and ts is None
    with tracer.consume_span(make_event("a.b", traceparent=INCOMING), "h") as span:
        assert not span.is_recording()


def test_real_event_satisfies_protocol(provider, exporter):
    events = pytest.importorskip("aperion_event_bus.events")
    tracer = EventTracer(provider)
    with tracer.publish_span("order.created", "evt_x", "c") as (tp, ts):
        event = events.Event("order.created", {"a": 1}, traceparent=tp, tracestate=ts)
    with tracer.consume_span(event, "h"):
        pass
    assert len(exporter.get_finished_spans()) == 2
