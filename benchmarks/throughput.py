"""Throughput, latency and memory of the in-process bus (issue #2 targets).

Run with ``make bench`` (or ``python benchmarks/throughput.py --quick``). Each
scenario runs 5 times in a fresh process of its own; the table shows the median
events/s, p50/p99 publish-to-handler latency (sampled every 64th event) and the
peak RSS of that scenario's process. blinker (``send``) and bubus (``dispatch``)
run the same workloads when installed (``pip install '.[bench]'``), side by side:
one at a time, fire and forget (bubus: dispatched in batches of 50, then
waited for: it refuses 100 pending events, and in our runs batches of 60 or more
never finished; blinker has no queue, so its fire-and-forget row is a plain
``send`` like its one-at-a-time row) and fan-out (10 handlers, 1,000
non-matching subscriptions: other signals for blinker, other event types for
bubus).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
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
def blinker_send(n: int, handlers: int = 1, noise: int = 0) -> Result | None:
    """``handlers`` receivers on one signal, ``noise`` other signals with a receiver
    each (blinker has no patterns: these are the subscriptions that do not match)."""
    try:
        import blinker
    except ImportError:
        return None
    lat = Latency(n)
    signal = blinker.Signal()

    def receiver(sender: Any, **kw: Any) -> None:
        lat.seen(kw["i"])

    def other(sender: Any, **kw: Any) -> None:
        return None

    signal.connect(receiver)
    for _ in range(handlers - 1):
        signal.connect(lambda sender, **kw: None, weak=False)  # distinct receivers
    others = [blinker.Signal() for _ in range(noise)]
    for sig in others:
        sig.connect(other)
    send = signal.send
    t0 = perf()
    for i in range(n):
        if i % SAMPLE == 0:
            lat.stamp(i)
        send("bench", i=i)
    elapsed = perf() - t0
    return n * handlers / elapsed, lat.p(0.5), lat.p(0.99)


def bubus_dispatch(n: int, batch: int = 1, handlers: int = 1, noise: int = 0) -> Result | None:
    """``batch`` 1: await each dispatch; else dispatch ``batch`` events without
    awaiting, then wait until idle (bubus refuses 100 pending events)."""
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
        bus = BubusBus(max_history_size=100)

        async def handler(event: Any) -> None:
            lat.seen(event.i)

        bus.on(BenchEvent, handler)
        for k in range(handlers - 1):

            async def other(event: Any) -> None:
                return None

            other.__name__ = f"other{k}"
            bus.on(BenchEvent, other)
        for k in range(noise):
            bus.on(f"Noise{k}Event", handler)
        t0 = perf()
        for i in range(n):
            if i % SAMPLE == 0:
                lat.stamp(i)
            if batch == 1:
                await bus.dispatch(BenchEvent(i=i))
            else:
                bus.dispatch(BenchEvent(i=i))
                if i % batch == batch - 1:
                    await bus.wait_until_idle()
        await bus.wait_until_idle()
        elapsed = perf() - t0
        await bus.stop(clear=True)
        return n * handlers / elapsed, lat.p(0.5), lat.p(0.99)

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


# scenario key -> (label, target, run(n) -> Result | None, share of n)
Scenario = tuple[str, str, Callable[[int], Result | None], float]
SCENARIOS: dict[str, Scenario] = {
    "nowait": ("publish_nowait (async) -> 1 async handler, drain", ">= 500,000", aperion_nowait, 1),
    "blinker_nowait": ("  blinker send (no queue: a plain send) -> 1 receiver", "reference", blinker_send, 1),
    "bubus_nowait": (
        "  bubus dispatch, batches of 50 pending -> 1 async handler",
        "reference",
        lambda n: bubus_dispatch(n, batch=50),
        1 / 40,
    ),
    "await": ("await publish one at a time -> 1 async handler", ">= 150,000", aperion_await, 1 / 4),
    "blinker_await": ("  blinker send -> 1 receiver", "reference", blinker_send, 1),
    "bubus_await": ("  bubus await dispatch one at a time -> 1 async handler", "reference", bubus_dispatch, 1 / 40),
    "emit_wait": ("emit(wait_for_handlers=True) sync -> 1 sync handler", ">= 200,000", aperion_emit_wait, 1),
    "emit_nowait": ("emit fire-and-forget sync -> 1 sync handler, drain", ">= 200,000", aperion_emit_nowait, 1),
    "fanout1": (
        "fan-out: 1 handler, no other subscriptions (handler calls/s)",
        "baseline",
        lambda n: aperion_fanout(n, 1, 0),
        1 / 2,
    ),
    "fanout10": (
        "fan-out: 10 handlers + 1,000 non-matching patterns (calls/s)",
        "<= 1.5x cost",
        lambda n: aperion_fanout(n, 10, 1000),
        1 / 2,
    ),
    "blinker_fanout": (
        "  blinker send: 10 receivers + 1,000 other signals (calls/s)",
        "reference",
        lambda n: blinker_send(n, 10, 1000),
        1 / 2,
    ),
    "bubus_fanout": (
        "  bubus dispatch, batches of 50: 10 handlers + 1,000 other types (calls/s)",
        "reference",
        lambda n: bubus_dispatch(n, batch=50, handlers=10, noise=1000),
        1 / 400,
    ),
}


def run_child(key: str, n: int, runs: int) -> None:
    """In the scenario's own process: run it ``runs`` times, print one JSON line with
    the median result and this process's peak RSS."""
    if key == "memory":
        growth, rate = aperion_memory(n)
        out: dict[str, Any] = {"growth": growth, "rate": rate}
    else:
        fn = SCENARIOS[key][2]
        out = {"result": median_of(runs, lambda: fn(n))}
    out["peak_rss"] = peak_rss_mb()
    print(json.dumps(out))


def in_child(key: str, n: int, runs: int) -> dict[str, Any]:
    """Run scenario ``key`` in a fresh interpreter, so its peak RSS is its own."""
    proc = subprocess.run(
        [sys.executable, __file__, "--scenario", key, "--n", str(n), "--runs", str(runs)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        print(f"  {key} failed (exit {proc.returncode})", file=sys.stderr)
        return {"result": None, "peak_rss": float("nan")}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer events and runs (smoke test)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)  # internal: one scenario, in a child
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        run_child(args.scenario, args.n, args.runs)
        return
    runs = 1 if args.quick else args.runs
    n = 20_000 if args.quick else 200_000
    mem_n = 50_000 if args.quick else 1_000_000

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, n={n}, runs={runs}", file=sys.stderr)
    rows: dict[str, tuple[Result | None, float]] = {}
    for key, (label, _target, _fn, share) in SCENARIOS.items():
        out = in_child(key, max(200, int(n * share)), runs)
        result = tuple(out["result"]) if out["result"] is not None else None
        rows[key] = (result, out["peak_rss"])  # type: ignore[assignment]
        shown = "n/a" if result is None else f"{result[0]:>12,.0f}"
        print(f"  {label:<78} {shown}", file=sys.stderr, flush=True)
    memory = in_child("memory", mem_n, 1)

    print()
    print("| scenario | target | events/s | p50 latency (us) | p99 latency (us) | peak RSS (MB) |")
    print("|---|---|---:|---:|---:|---:|")
    for key, (result, peak) in rows.items():
        label, target = SCENARIOS[key][:2]
        if result is None:
            print(f"| {label.strip()} | {target} | n/a (not installed) | | | |")
        else:
            print(
                f"| {label.strip()} | {target} | {result[0]:,.0f} | {result[1]:,.1f} | "
                f"{result[2]:,.1f} | {peak:.0f} |"
            )
    one, ten = rows["fanout1"][0], rows["fanout10"][0]
    if one and ten:
        ratio = one[0] / ten[0]
        print(f"\nPer-handler dispatch cost, 10 handlers + 1,000 patterns vs 1 handler: {ratio:.2f}x (target <= 1.5x)")
    print(f"RSS growth over {mem_n:,} events (BLOCK, 10,000 pending max): {memory['growth']:.1f} MB "
          f"(target < 30 MB) at {memory['rate']:,.0f} events/s; peak RSS {memory['peak_rss']:.0f} MB")


if __name__ == "__main__":
    main()
