"""Throughput, latency and memory of the in-process bus (issue #2 targets).

Run with ``make bench`` (or ``python benchmarks/throughput.py --quick``). Each
scenario runs 5 times; the table shows the median events/s, p50/p99
publish-to-handler latency (sampled every 64th event) and peak RSS. blinker and
bubus run the same workloads when installed (``pip install '.[bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from aperion_event_bus import Event, EventBus

perf = time.perf_counter
SAMPLE = 64


def rss_mb() -> float:
    try:
        with open(f"/proc/{os.getpid()}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Latency:
    """Publish timestamps for every SAMPLE-th event; handler records the delay."""

    def __init__(self, n: int) -> None:
        self.sent: dict[int, float] = {}
        self.delays: list[float] = []

    def stamp(self, i: int) -> None:
        if i % SAMPLE == 0:
            self.sent[i] = perf()

    def seen(self, i: int) -> None:
        if i % SAMPLE == 0:
            t = self.sent.get(i)
            if t is not None:
                self.delays.append(perf() - t)

    def p(self, q: float) -> float:
        if not self.delays:
            return float("nan")
        data = sorted(self.delays)
        return data[min(len(data) - 1, int(q * len(data)))] * 1e6


Result = tuple[float, float, float]  # events/s, p50 us, p99 us


def run_async(fn: Callable[[], Any]) -> Any:
    return asyncio.run(fn())


# --------------------------------------------------------------- aperion
def aperion_nowait(n: int) -> Result:
    async def main() -> Result:
        lat = Latency(n)
        async with EventBus() as bus:
            async def handler(e: Event) -> None:
                lat.seen(e.payload["i"])

            bus.on("bench.event", handler)
            publish = bus.publish_nowait
            t0 = perf()
            for i in range(n):
                if i % SAMPLE == 0:
                    lat.stamp(i)
                publish("bench.event", {"i": i})
            await bus.drain()
            elapsed = perf() - t0
        return n / elapsed, lat.p(0.5), lat.p(0.99)

    return run_async(main)


def aperion_await(n: int) -> Result:
    async def main() -> Result:
        lat = Latency(n)
        async with EventBus() as bus:
            async def handler(e: Event) -> None:
                lat.seen(e.payload["i"])

            bus.on("bench.event", handler)
            publish = bus.publish
            t0 = perf()
            for i in range(n):
                if i % SAMPLE == 0:
                    lat.stamp(i)
                await publish("bench.event", {"i": i})
            elapsed = perf() - t0
        return n / elapsed, lat.p(0.5), lat.p(0.99)

    return run_async(main)


def aperion_emit_wait(n: int) -> Result:
    lat = Latency(n)
    bus = EventBus()
    bus.subscribe(lambda e: lat.seen(e.payload["i"]), "bench.event")
    emit = bus.emit
    t0 = perf()
    for i in range(n):
        if i % SAMPLE == 0:
            lat.stamp(i)
        emit("bench.event", {"i": i}, wait_for_handlers=True)
    elapsed = perf() - t0
    bus.shutdown(10)
    return n / elapsed, lat.p(0.5), lat.p(0.99)


def aperion_emit_nowait(n: int) -> Result:
    lat = Latency(n)
    bus = EventBus()
    bus.subscribe(lambda e: lat.seen(e.payload["i"]), "bench.event")
    emit = bus.emit
    t0 = perf()
    for i in range(n):
        if i % SAMPLE == 0:
            lat.stamp(i)
        emit("bench.event", {"i": i})
    asyncio.run(bus.wait_for_pending(60))
    elapsed = perf() - t0
    bus.shutdown(10)
    return n / elapsed, lat.p(0.5), lat.p(0.99)


def aperion_fanout(n: int, handlers: int, noise: int) -> Result:
    """``handlers`` async handlers per event plus ``noise`` non-matching pattern subscriptions."""

    async def main() -> Result:
        lat = Latency(n)
        async with EventBus() as bus:
            async def first(e: Event) -> None:
                lat.seen(e.payload["i"])

            async def other(e: Event) -> None:
                return None

            bus.on("bench.event", first)
            for _ in range(handlers - 1):
                bus.on("bench.event", other)
            for k in range(noise):
                bus.on(f"noise{k}.*", other)
            t0 = perf()
            for i in range(n):
                if i % SAMPLE == 0:
                    lat.stamp(i)
                bus.publish_nowait("bench.event", {"i": i})
            await bus.drain()
            elapsed = perf() - t0
        return n * handlers / elapsed, lat.p(0.5), lat.p(0.99)  # handler calls per second

    return run_async(main)


def aperion_memory(n: int) -> tuple[float, float]:
    """RSS growth over ``n`` events with a bounded queue (BLOCK, 10,000 pending)."""

    async def main() -> tuple[float, float]:
        async with EventBus(max_pending_events=10_000, overflow_policy="block") as bus:
            async def handler(e: Event) -> None:
                return None

            bus.on("bench.event", handler)
            for i in range(20_000):  # warm up allocator pools
                await bus.publish("bench.event", {"i": i}, wait=False)
            await bus.drain()
            gc.collect()
            before = rss_mb()
            t0 = perf()
            for i in range(n):
                await bus.publish("bench.event", {"i": i}, wait=False)
            await bus.drain()
            elapsed = perf() - t0
            gc.collect()
            after = rss_mb()
        return after - before, n / elapsed

    return run_async(main)


# ------------------------------------------------------------ competitors
def blinker_send(n: int) -> Result | None:
    try:
        import blinker
    except ImportError:
        return None
    lat = Latency(n)
    signal = blinker.Signal()

    def receiver(sender: Any, **kw: Any) -> None:
        lat.seen(kw["i"])

    signal.connect(receiver)
    send = signal.send
    t0 = perf()
    for i in range(n):
        if i % SAMPLE == 0:
            lat.stamp(i)
        send("bench", i=i)
    elapsed = perf() - t0
    return n / elapsed, lat.p(0.5), lat.p(0.99)


def bubus_dispatch(n: int) -> Result | None:
    try:
        import logging

        from bubus import BaseEvent
        from bubus import EventBus as BubusBus
    except ImportError:
        return None
    logging.getLogger("bubus").setLevel(logging.ERROR)

    class BenchEvent(BaseEvent):  # type: ignore[misc, valid-type]
        i: int = 0

    async def main() -> Result:
        lat = Latency(n)
        bus = BubusBus()

        async def handler(event: Any) -> None:
            lat.seen(event.i)

        bus.on(BenchEvent, handler)
        t0 = perf()
        for i in range(n):
            if i % SAMPLE == 0:
                lat.stamp(i)
            # bubus refuses more than 100 pending events, so await each dispatch
            await bus.dispatch(BenchEvent(i=i))
        await bus.wait_until_idle()
        elapsed = perf() - t0
        await bus.stop(clear=True)
        return n / elapsed, lat.p(0.5), lat.p(0.99)

    try:
        return run_async(main)
    except Exception as exc:
        print(f"  bubus failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def median_of(runs: int, fn: Callable[[], Result | None]) -> Result | None:
    results = [fn() for _ in range(runs)]
    if any(r is None for r in results):
        return None
    rate = statistics.median(r[0] for r in results)  # type: ignore[index]
    p50 = statistics.median(r[1] for r in results)  # type: ignore[index]
    p99 = statistics.median(r[2] for r in results)  # type: ignore[index]
    return rate, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer events and runs (smoke test)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    n = 20_000 if args.quick else 200_000
    n_small = n // 4
    mem_n = 50_000 if args.quick else 1_000_000

    rows: list[tuple[str, str, Result | None]] = []

    def add(label: str, target: str, fn: Callable[[], Result | None]) -> None:
        result = median_of(runs, fn)
        rows.append((label, target, result))
        shown = "n/a" if result is None else f"{result[0]:>12,.0f}"
        print(f"  {label:<58} {shown}", file=sys.stderr, flush=True)

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, n={n}, runs={runs}", file=sys.stderr)
    add("publish_nowait (async) -> 1 async handler, drain", ">= 500,000", lambda: aperion_nowait(n))
    add("await publish one at a time -> 1 async handler", ">= 150,000", lambda: aperion_await(n_small))
    add("emit(wait_for_handlers=True) sync -> 1 sync handler", ">= 200,000", lambda: aperion_emit_wait(n))
    add("emit fire-and-forget sync -> 1 sync handler, drain", ">= 200,000", lambda: aperion_emit_nowait(n))
    one = median_of(runs, lambda: aperion_fanout(n // 2, 1, 0))
    ten = median_of(runs, lambda: aperion_fanout(n // 2, 10, 1000))
    rows.append(("fan-out: 1 handler, no other subscriptions (handler calls/s)", "baseline", one))
    rows.append(("fan-out: 10 handlers + 1,000 non-matching patterns (calls/s)", "<= 1.5x cost", ten))
    add("blinker Signal.send -> 1 receiver", "reference", lambda: blinker_send(n))
    add("bubus await dispatch one at a time -> 1 async handler", "reference", lambda: bubus_dispatch(max(2_000, n // 40)))
    growth, mem_rate = aperion_memory(mem_n)

    print()
    print("| scenario | target | events/s | p50 latency (us) | p99 latency (us) |")
    print("|---|---|---:|---:|---:|")
    for label, target, result in rows:
        if result is None:
            print(f"| {label} | {target} | n/a | | |")
        else:
            print(f"| {label} | {target} | {result[0]:,.0f} | {result[1]:,.1f} | {result[2]:,.1f} |")
    if one and ten:
        ratio = one[0] / ten[0]
        print(f"\nPer-handler dispatch cost, 10 handlers + 1,000 patterns vs 1 handler: {ratio:.2f}x (target <= 1.5x)")
    print(f"RSS growth over {mem_n:,} events (BLOCK, 10,000 pending max): {growth:.1f} MB "
          f"(target < 30 MB) at {mem_rate:,.0f} events/s")
    print(f"Peak RSS of the benchmark process: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
