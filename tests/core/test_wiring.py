"""The bus with its optional parts: audit log, DLQ, metrics, tracing, redacted logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from aperion_event_bus import Event, EventBus

EMAIL = "ada.lovelace@example.com"


def test_audit_log_written_redacted_and_readable(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    bus = EventBus(event_log_path=str(log))
    try:
        bus.subscribe(lambda e: None, "user.created")
        event_id = bus.emit("user.created", {"email": EMAIL, "password": "hunter2", "n": 1})
        events = bus.get_events()  # flushes the background writer first
        assert [e.event_id for e in events] == [event_id]
        text = log.read_text()
        assert EMAIL not in text and "hunter2" not in text
        assert "[REDACTED_EMAIL]" in text or "[REDACTED]" in text
        assert json.loads(text.splitlines()[0])["event_id"] == event_id
        assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
        stats = bus.get_stats()
        assert stats["audit_enabled"] and stats["total_events_logged"] == 1
        assert stats["log_file_size"] > 0
        for i in range(5):
            bus.emit("order.placed", {"i": i})
        assert len(bus.get_events(event_type="order.placed", limit=3)) == 3
        assert bus.clear_log()
        assert bus.get_events() == []
    finally:
        bus.shutdown(2)


def test_audit_records_handler_errors(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    bus = EventBus(event_log_path=str(log))

    def broken(e: Event) -> None:
        raise ValueError(f"cannot mail {EMAIL}")

    bus.subscribe(broken, "user.created")
    bus.emit("user.created", {}, wait_for_handlers=True)
    bus.shutdown(2)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    errors = [line for line in lines if line["event_type"] == "system.handler_error"]
    assert len(errors) == 1
    payload = errors[0]["payload"]
    assert payload["original_event_type"] == "user.created" and errors[0]["source"] == "event_bus"
    assert EMAIL not in json.dumps(payload)


def test_no_event_log_path_means_no_audit() -> None:
    bus = EventBus()
    bus.emit("a.b", {})
    assert bus.get_events() == [] and bus.get_stats()["audit_enabled"] is False
    assert bus.clear_log() is False
    bus.shutdown(1)


def test_dead_letter_queue_receives_failures_and_retry_only_reruns_failed_handler() -> None:
    from aperion_event_bus import DeadLetterQueue, FailureReason

    dlq = DeadLetterQueue()
    bus = EventBus(dead_letter_queue=dlq)
    calls = {"ok": 0, "flaky": 0}
    healthy = threading.Event()

    def ok(e: Event) -> None:
        calls["ok"] += 1

    def flaky(e: Event) -> None:
        calls["flaky"] += 1
        if not healthy.is_set():
            raise RuntimeError("downstream unavailable")

    bus.on("job.run", ok, priority=10)
    bus.on("job.run", flaky, name="flaky-worker")
    bus.emit("job.run", {"id": 1}, wait_for_handlers=True)
    [entry] = dlq.get_all()
    assert entry.reason == FailureReason.HANDLER_ERROR
    assert entry.handler_name == "flaky-worker" and "downstream unavailable" in entry.error
    assert entry.metadata["subscription_name"] == "flaky-worker"
    assert dlq.retry(entry.id, bus) is False  # fails again: same entry, retry_count + 1
    again = dlq.get(entry.id)
    assert again is not None and again.retry_count == 1
    healthy.set()
    assert dlq.retry(entry.id, bus) is True
    assert dlq.size() == 0
    assert calls == {"ok": 1, "flaky": 3}  # only the failed handler was retried
    assert bus.get_stats()["dlq"]["size"] == 0
    bus.shutdown(1)


async def test_dlq_gets_timeouts() -> None:
    from aperion_event_bus import DeadLetterQueue, FailureReason

    dlq = DeadLetterQueue()
    async with EventBus(dead_letter_queue=dlq) as bus:
        @bus.on("slow.x", timeout=0.02)
        async def slow(e: Event) -> None:
            await asyncio.sleep(1)

        await bus.publish("slow.x", {})
    assert dlq.get_all()[0].reason == FailureReason.HANDLER_TIMEOUT


async def test_metrics_record_a_known_workload() -> None:
    from aperion_event_bus import InMemoryMetrics, MetricsCollector

    backend = InMemoryMetrics()
    collector = MetricsCollector(backend)
    async with EventBus(metrics=collector) as bus:
        @bus.on("m.ok")
        async def fine(e: Event) -> None:
            return None

        @bus.on("m.bad")
        def bad(e: Event) -> None:
            raise RuntimeError("x")

        for _ in range(5):
            await bus.publish("m.ok", {})
        await bus.publish("m.bad", {})
        await bus.drain(2)
        stats = bus.get_stats()
    snapshot = collector.get_snapshot()
    assert snapshot["events_emitted"]["m.ok"] == 5
    assert snapshot["total_events_emitted"] >= 6
    handlers = snapshot["handler_stats"]
    fine_stats = next(v for k, v in handlers.items() if k.endswith("fine"))
    bad_stats = next(v for k, v in handlers.items() if k.endswith("bad"))
    assert fine_stats["total_calls"] == 5 and fine_stats["failure_count"] == 0
    assert bad_stats["failure_count"] == 1
    assert "metrics" in stats and stats["metrics_enabled"]


def test_metrics_accepts_a_backend_and_rejects_junk() -> None:
    from aperion_event_bus import ConfigurationError, InMemoryMetrics

    bus = EventBus(metrics=InMemoryMetrics())
    bus.shutdown(1)
    with pytest.raises(ConfigurationError, match="MetricsCollector or a MetricsBackend"):
        EventBus(metrics=object())


@pytest.mark.parametrize("junk", ["yes", object(), 1, [], False])
def test_redactor_rejects_junk_at_construction(junk: object, tmp_path: Path) -> None:
    """A value that would only fail at the first audit line or error report is
    refused when the bus is made, with what is accepted."""
    from aperion_event_bus import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"redact\(data\) and redact_string\(text\)"):
        EventBus(redactor=junk, event_log_path=str(tmp_path / "x.jsonl"))


def test_redactor_accepts_none_and_redactor_likes() -> None:
    from aperion_event_bus import Redactor

    class Upper:
        def redact(self, data: object) -> object:
            return data

        def redact_string(self, text: str) -> str:
            return text.upper()

    for ok in (None, Redactor(), Redactor(enabled=False), Upper()):
        EventBus(redactor=ok).shutdown(1)


@pytest.mark.parametrize("junk", ["yes", object(), 1, {}])
def test_dead_letter_queue_rejects_junk_at_construction(junk: object) -> None:
    from aperion_event_bus import ConfigurationError

    with pytest.raises(ConfigurationError, match="dead_letter_queue must be None, True"):
        EventBus(dead_letter_queue=junk)


def test_dead_letter_queue_accepts_none_false_true_and_a_queue() -> None:
    from aperion_event_bus import DeadLetterQueue

    for value, enabled in ((None, False), (False, False), (True, True), (DeadLetterQueue(), True)):
        bus = EventBus(dead_letter_queue=value)
        assert bus.get_stats()["dlq_enabled"] is enabled
        bus.shutdown(1)


def test_handler_errors_are_logged_and_published_redacted(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    reports: list[Event] = []

    def broken(e: Event) -> None:
        raise RuntimeError(f"customer {EMAIL} has card 4111 1111 1111 1111")

    bus.subscribe(broken, "pay.x")
    bus.subscribe(reports.append, "system.handler_error")
    with caplog.at_level(logging.ERROR, logger="aperion_event_bus"):
        bus.emit("pay.x", {}, wait_for_handlers=True)
    asyncio.run(bus.wait_for_pending(2))
    bus.shutdown(2)
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "broken" in text
    assert EMAIL not in text and "4111 1111 1111 1111" not in text
    assert reports and EMAIL not in reports[0].payload["error"]


@pytest.fixture
def tracer_and_exporter():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from aperion_event_bus import EventTracer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return EventTracer(provider), exporter


async def test_tracing_links_publish_handler_child_across_threads(tracer_and_exporter) -> None:
    tracer, exporter = tracer_and_exporter
    seen: dict[str, Event] = {}
    async with EventBus(tracing=tracer) as bus:
        @bus.on("order.placed")
        async def place(e: Event) -> None:
            seen["parent"] = e
            await bus.publish("stock.reserve", {})

        @bus.on("stock.reserve")
        def reserve(e: Event) -> None:  # sync: runs on a pool thread
            seen["child"] = e
            bus.emit("stock.reserved", {})

        @bus.on("stock.reserved")
        async def reserved(e: Event) -> None:
            seen["grandchild"] = e

        result = await bus.publish("order.placed", {"id": 1})
        await bus.drain(2)
    parent, child, grandchild = seen["parent"], seen["child"], seen["grandchild"]
    trace_id = parent.traceparent.split("-")[1]
    assert parent.correlation_id == trace_id == result.event.correlation_id  # documented rule
    for e in (child, grandchild):
        assert e.traceparent.split("-")[1] == trace_id
        assert e.correlation_id == trace_id
    spans = exporter.get_finished_spans()
    assert {s.context.trace_id for s in spans} == {int(trace_id, 16)}
    by_name = {s.name: s for s in spans}
    consume_parent = by_name["process order.placed"]
    publish_child = by_name["publish stock.reserve"]
    assert publish_child.parent.span_id == consume_parent.context.span_id
    consume_child = by_name["process stock.reserve"]
    assert by_name["publish stock.reserved"].parent.span_id == consume_child.context.span_id


async def test_tracing_records_redacted_errors(tracer_and_exporter) -> None:
    tracer, exporter = tracer_and_exporter
    async with EventBus(tracing=tracer) as bus:
        @bus.on("x.fail")
        async def fail(e: Event) -> None:
            raise RuntimeError(f"mail {EMAIL}")

        await bus.publish("x.fail", {})
    [span] = [s for s in exporter.get_finished_spans() if s.name == "process x.fail"]
    assert span.status.status_code.name == "ERROR"
    assert EMAIL not in json.dumps([dict(ev.attributes or {}) for ev in span.events], default=str)


async def test_incoming_traceparent_header_becomes_the_parent(tracer_and_exporter) -> None:
    from opentelemetry import context as otel_context

    from aperion_event_bus import extract_trace_context_from_headers

    tracer, exporter = tracer_and_exporter
    header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    incoming = extract_trace_context_from_headers({"traceparent": header})
    async with EventBus(tracing=tracer) as bus:
        bus.on("req.handled", lambda e: None)
        token = otel_context.attach(incoming)
        try:
            result = await bus.publish("req.handled", {})
        finally:
            otel_context.detach(token)
    assert result.event.traceparent.split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert result.event.correlation_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    [producer] = [s for s in exporter.get_finished_spans() if s.name == "publish req.handled"]
    assert producer.parent is not None and producer.parent.span_id == 0x00F067AA0BA902B7


def test_redactions_are_counted_by_type_in_metrics(tmp_path: Path) -> None:
    from aperion_event_bus import InMemoryMetrics, MetricsCollector

    collector = MetricsCollector(InMemoryMetrics())
    bus = EventBus(event_log_path=str(tmp_path / "a.jsonl"), metrics=collector)
    bus.emit("user.created", {"note": f"mail {EMAIL}", "password": "hunter2"})
    bus.get_events()  # flushes the audit writer, which redacts
    bus.shutdown(2)
    redactions = collector.get_snapshot()["redactions"]
    assert redactions.get("email", 0) >= 1
    assert sum(redactions.values()) >= 2


def test_library_log_records_carry_event_context(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()

    def broken(e: Event) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken, "ctx.x")
    with caplog.at_level(logging.ERROR, logger="aperion_event_bus"):
        event_id = bus.emit("ctx.x", {}, correlation_id="corr-77", wait_for_handlers=True)
    bus.shutdown(1)
    [record] = [r for r in caplog.records if "boom" in r.getMessage()]
    assert record.correlation_id == "corr-77"
    assert record.event_id == event_id and record.event_type == "ctx.x"


def test_the_redaction_engine_loads_with_the_bus_not_at_the_first_failure() -> None:
    """Importing the redaction engine takes ~50 ms: ``import aperion_event_bus``
    does not, creating a bus does, so the first handler failure on a running loop
    does not stall it (it did: ~35-60 ms)."""
    import subprocess
    import sys
    import textwrap

    code = """
        import asyncio, logging, sys
        import aperion_event_bus
        from aperion_event_bus import EventBus
        ENGINE = "aperion_event_bus.redaction"
        assert ENGINE not in sys.modules  # the import stays light
        logging.basicConfig(level=logging.CRITICAL)

        async def main():
            bus = EventBus()
            assert ENGINE in sys.modules  # loaded by the constructor

            @bus.on("a.b")
            async def fails(event):
                raise RuntimeError("boom")

            before = set(sys.modules)
            result = await bus.publish("a.b", {})  # logs, redacts, system.handler_error
            assert result.errors
            loaded = {m for m in set(sys.modules) - before if m.startswith(ENGINE)}
            assert not loaded, loaded  # nothing of the engine imported on the loop
            await bus.close()
            print("ok")

        asyncio.run(main())
        """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
