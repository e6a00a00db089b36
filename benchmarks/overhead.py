"""Cost of the optional features on the publish/handle path (issues #3 and #5).

Same workload each time: ``await bus.publish`` one event at a time to one async
handler (the payload carries an email and a password so redaction has work).
Scenarios: plain bus; audit log on (redaction on the audit path, off-loop writer);
audit log with a no-op redactor; metrics (InMemoryMetrics); tracing with a no-op
tracer provider; tracing with the SDK and a batch span processor (in-memory
exporter). Median of 5 runs; run with ``python benchmarks/overhead.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aperion_event_bus import Event, EventBus

PAYLOAD = {"user_id": 42, "email": "ada.lovelace@example.com", "password": "hunter2", "plan": "pro"}


class NoRedaction:
    """Redactor stand-in that changes nothing (to isolate the redaction cost)."""

    def redact(self, data: Any) -> Any:
        return data

    def redact_string(self, text: str) -> str:
        return text


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 5_000 if args.quick else 30_000
    runs = 1 if args.quick else 5
    tmp = Path(tempfile.mkdtemp(prefix="aperion-bench-"))

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

    def sdk_tracing() -> EventBus:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from aperion_event_bus import EventTracer

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
        return EventBus(tracing=EventTracer(provider))

    scenarios: list[tuple[str, Callable[[], EventBus], str]] = [
        ("plain bus", EventBus, "baseline"),
        ("audit log, default redaction", audit(), "< 2x the no-redaction audit run"),
        ("audit log, no redaction", audit(NoRedaction()), "reference"),
        ("metrics (InMemoryMetrics)", metrics, ""),
        ("tracing, no-op tracer provider", noop_tracing, "< 15% overhead"),
        ("tracing, SDK + batch processor", sdk_tracing, "< 3x"),
    ]
    results: dict[str, float] = {}
    for label, make, _ in scenarios:
        try:
            results[label] = statistics.median(run(n, make) for _ in range(runs))
        except ImportError as exc:
            print(f"  {label}: skipped ({exc})")
            continue
        print(f"  {label:<34} {results[label]:>10,.0f} events/s", flush=True)
    base = results["plain bus"]
    print("\n| scenario | events/s | cost vs plain | target |\n|---|---:|---:|---|")
    for label, _, target in scenarios:
        if label in results:
            print(f"| {label} | {results[label]:,.0f} | {base / results[label]:.2f}x | {target} |")
    if "audit log, default redaction" in results and "audit log, no redaction" in results:
        ratio = results["audit log, no redaction"] / results["audit log, default redaction"]
        print(f"\nRedaction on the audit path: {ratio:.2f}x the cost of the same audit run "
              "without redaction (target < 2x)")


if __name__ == "__main__":
    main()
