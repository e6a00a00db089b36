"""Cost of the optional features on the publish/handle path (issues #3 and #5).

Same workload each time: ``await bus.publish`` one event at a time to one async
handler (the payload carries an email and a password so redaction has work).
Scenarios: plain bus; audit log on (redaction on the audit path, off-loop writer);
audit log with a no-op redactor; metrics (InMemoryMetrics); tracing with a no-op
tracer provider; tracing with the SDK and a batch span processor (default
settings, in-memory exporter that keeps the last batch only).

Five rounds; in each, every scenario runs right after a plain-bus run and its
cost is the ratio to that run.  The table shows the median cost (robust to the
drifting load of a shared machine) and the median events/s.  Run with
``python benchmarks/overhead.py`` (``--quick``: one short round;
``--instructions``: CPU instructions per event under callgrind, repeatable).

Information rows (no target): the SDK with an exporter that keeps every span
(the test set-up: the growing heap makes the garbage collector's work grow), the
SDK with a ``ParentBased(TraceIdRatioBased(0.1))`` sampler (a user's choice), and
the SDK floor: a bare loop creating and ending the same two spans (same names,
kinds, attributes and parent link) without the bus.  1 + the floor's cost is the
lowest cost a traced bus could reach.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aperion_event_bus import Event, EventBus

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

FLOOR = "SDK floor: two spans per event, no bus"
PAYLOAD = {"user_id": 42, "email": "ada.lovelace@example.com", "password": "hunter2", "plan": "pro"}


class NoRedaction:
    """Redactor stand-in that changes nothing (to isolate the redaction cost)."""

    def redact(self, data: Any) -> Any:
        return data

    def redact_string(self, text: str) -> str:
        return text


class SdkTracing:
    """Bus factory: tracing through an OpenTelemetry SDK provider with a batch span
    processor (default queue, batch size and schedule).

    ``keep_all`` uses the plain ``InMemorySpanExporter`` (retains every span, as in
    tests); otherwise the exporter keeps only the last exported batch, which is
    what a network exporter holds at most.  The provider of the previous bus is
    shut down when the next one is made (and by :meth:`close`), as an application
    does at exit, so runs do not accumulate worker threads and retained spans.
    """

    def __init__(self, *, keep_all: bool = False, sampler: Any = None) -> None:
        self.keep_all = keep_all
        self.sampler = sampler
        self.provider: TracerProvider | None = None

    def tracer_provider(self) -> TracerProvider:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        class LastBatchExporter(InMemorySpanExporter):
            def export(self, spans: Any) -> Any:
                self.clear()
                return super().export(spans)

        self.close()
        self.provider = TracerProvider(sampler=self.sampler)
        exporter = InMemorySpanExporter() if self.keep_all else LastBatchExporter()
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        return self.provider

    def __call__(self) -> EventBus:
        from aperion_event_bus import EventTracer

        return EventBus(tracing=EventTracer(self.tracer_provider()))

    def close(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
            self.provider = None


def sdk_floor(n: int) -> float:
    """Events/s of a bare loop making the bus's two spans per event (no bus)."""
    from opentelemetry.context import Context
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, set_span_in_context

    factory = SdkTracing()
    tracer = factory.tracer_provider().get_tracer("floor")
    common = {
        "messaging.system": "aperion_event_bus",
        "messaging.destination.name": "user.updated",
        "messaging.message.id": "0192f5c4-1b7e-7c3a-9d2e-5f6a7b8c9d0e",
    }
    send = {**common, "messaging.operation.type": "send", "messaging.operation.name": "publish"}
    process = {
        **common,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.subscription.name": "handler",
    }
    empty = Context()
    producer, consumer = SpanKind.PRODUCER, SpanKind.CONSUMER

    def one() -> None:
        span = tracer.start_span("publish user.updated", empty, producer, send)
        sc = span.get_span_context()
        span.set_attribute("messaging.message.conversation_id", f"{sc.trace_id:032x}")
        span.end()
        remote = SpanContext(sc.trace_id, sc.span_id, True, sc.trace_flags, sc.trace_state)
        parent = set_span_in_context(NonRecordingSpan(remote), empty)
        attrs = {**process, "messaging.message.conversation_id": f"{sc.trace_id:032x}"}
        tracer.start_span("process user.updated", parent, consumer, attrs).end()

    for _ in range(200):
        one()
    t0 = time.perf_counter()
    for _ in range(n):
        one()
    elapsed = time.perf_counter() - t0
    factory.close()
    return n / elapsed


def run(n: int, make_bus: Callable[[], EventBus]) -> float:
    async def main() -> float:
        bus = make_bus()
        async with bus:
            async def handler(e: Event) -> None:
                return None

            bus.on("user.updated", handler)
            for _ in range(200):
                await bus.publish("user.updated", PAYLOAD)
            t0 = time.perf_counter()
            for _ in range(n):
                await bus.publish("user.updated", PAYLOAD)
            elapsed = time.perf_counter() - t0
        return n / elapsed

    return asyncio.run(main())


Scenario = tuple[str, Callable[[], float], str]  # label, one measured run (events/s), target


def build_scenarios(n: int) -> list[Scenario]:
    """The table's rows, each a function making one measured run of ``n`` events."""
    tmp = Path(tempfile.mkdtemp(prefix="aperion-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the audit logs written

    def audit(redactor: Any = None) -> Callable[[], EventBus]:
        counter = iter(range(1_000_000))
        return lambda: EventBus(event_log_path=str(tmp / f"audit-{next(counter)}.jsonl"), redactor=redactor)

    def metrics() -> EventBus:
        from aperion_event_bus import InMemoryMetrics

        return EventBus(metrics=InMemoryMetrics())

    def noop_tracing() -> EventBus:
        from opentelemetry.trace import NoOpTracerProvider

        from aperion_event_bus import EventTracer

        return EventBus(tracing=EventTracer(NoOpTracerProvider()))

    def noop_tracing_and_metrics() -> EventBus:
        from opentelemetry.metrics import NoOpMeterProvider
        from opentelemetry.trace import NoOpTracerProvider

        from aperion_event_bus import EventTracer
        from aperion_event_bus.observability.otel_metrics import OTelMetrics

        return EventBus(
            tracing=EventTracer(NoOpTracerProvider()), metrics=OTelMetrics(NoOpMeterProvider())
        )

    def ratio_sampler() -> Any:
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        return ParentBased(TraceIdRatioBased(0.1))

    def measure(make: Callable[[], EventBus]) -> Callable[[], float]:
        def once() -> float:
            try:
                return run(n, make)
            finally:
                if isinstance(make, SdkTracing):
                    make.close()

        return once

    return [
        ("plain bus", measure(EventBus), "baseline (two plain runs: the noise)"),
        ("audit log, default redaction", measure(audit()), "< 2x the no-redaction audit run"),
        ("audit log, no redaction", measure(audit(NoRedaction())), "reference"),
        ("metrics (InMemoryMetrics)", measure(metrics), ""),
        ("tracing, no-op tracer provider", measure(noop_tracing), "< 1.15x"),
        ("tracing + OTel metrics, no-op providers", measure(noop_tracing_and_metrics), "< 1.15x"),
        ("tracing, SDK + batch processor", measure(SdkTracing()), "< 3x"),
        ("tracing, SDK, exporter keeps all spans", measure(SdkTracing(keep_all=True)), "information"),
        ("tracing, SDK, 10% ratio sampler", measure(SdkTracing(sampler=ratio_sampler())),
         "information (user's choice)"),
        (FLOOR, lambda: sdk_floor(n), "information: the two spans alone"),
    ]


def instructions(labels: list[str]) -> None:
    """CPU instructions per event under callgrind: repeatable where wall-clock is not.

    Each scenario runs in its own process under ``valgrind --tool=callgrind`` with
    1,000 and with 3,000 events; the difference / 2,000 leaves out start-up and
    warm-up.  Each is run twice and the lower count kept: when the batch
    processor's thread is starved (a loaded machine), its queue overflows and
    every dropped span logs a warning, which only ever adds instructions.  (The
    thread's work is included; valgrind runs threads one at a time, so cache and
    lock effects are not.)"""
    import re
    import subprocess
    import sys

    def collected(label: str, events: int) -> int:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             __file__, "--run-one", label, "--events", str(events)],
            capture_output=True, text=True, check=True,
        )
        match = re.search(r"Collected : (\d+)", proc.stderr)
        if match is None:
            raise RuntimeError(f"no callgrind total for {label!r}:\n{proc.stderr[-2000:]}")
        return int(match.group(1))

    per_event: dict[str, int] = {}
    print("| scenario | instructions per event | vs plain |\n|---|---:|---:|")
    for label in labels:
        low, high = (min(collected(label, events) for _ in range(2)) for events in (1000, 3000))
        per_event[label] = (high - low) // 2000
        base = per_event.get("plain bus", per_event[label])
        print(f"| {label} | {per_event[label]:,} | {per_event[label] / base:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short round")
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per event under callgrind (plain, tracing rows, floor)")
    parser.add_argument("--run-one", metavar="LABEL", help="one run of one scenario, no output")
    parser.add_argument("--events", type=int, default=None, help="events per run")
    args = parser.parse_args()
    if args.instructions:
        instructions(["plain bus", "tracing, no-op tracer provider", "tracing, SDK + batch processor",
                      "tracing, SDK, 10% ratio sampler", FLOOR])
        return
    n = args.events or (5_000 if args.quick else 30_000)
    runs = 1 if args.quick else 5
    scenarios = build_scenarios(n)
    if args.run_one is not None:
        dict((label, once) for label, once, _ in scenarios)[args.run_one]()
        return
    # Rounds, and within a round a plain run right before each scenario: the load
    # of a shared machine drifts, so a cost is the median of the paired ratios.
    rates: dict[str, list[float]] = {label: [] for label, _, _ in scenarios}
    costs: dict[str, list[float]] = {label: [] for label, _, _ in scenarios}
    skipped: set[str] = set()
    for round_no in range(1, runs + 1):
        for label, once, _ in scenarios:
            if label in skipped:
                continue
            gc.collect()
            plain = run(n, EventBus)
            try:
                rate = once()
            except ImportError as exc:
                print(f"  {label}: skipped ({exc})")
                skipped.add(label)
                continue
            rates[label].append(rate)
            costs[label].append(plain / rate)
        print(f"  round {round_no}/{runs} done", flush=True)
    print("\n| scenario | events/s | cost vs plain | target |\n|---|---:|---:|---|")
    cost: dict[str, float] = {}
    for label, _, target in scenarios:
        if rates[label]:
            cost[label] = statistics.median(costs[label])
            print(f"| {label} | {statistics.median(rates[label]):,.0f} | {cost[label]:.2f}x | {target} |")
    if FLOOR in cost:
        print(f"\nSDK floor: the two spans alone cost {cost[FLOOR]:.2f}x a plain publish, so a traced "
              f"bus cannot go below {1 + cost[FLOOR]:.2f}x the plain bus")
        if "tracing, SDK + batch processor" in cost:
            traced = cost["tracing, SDK + batch processor"]
            print(f"Traced bus: {traced:.2f}x = plain 1.00x + floor {cost[FLOOR]:.2f}x + "
                  f"{traced - 1 - cost[FLOOR]:.2f}x for the rest (the bus's tracing code, and cache "
                  "effects of running bus and SDK together; see --instructions)")
    if "audit log, default redaction" in cost and "audit log, no redaction" in cost:
        ratio = cost["audit log, default redaction"] / cost["audit log, no redaction"]
        print(f"\nRedaction on the audit path: {ratio:.2f}x the cost of the same audit run "
              "without redaction (target < 2x)")


if __name__ == "__main__":
    main()
