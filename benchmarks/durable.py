"""Durable publish through the bus (issue #4): EventBus + SQLiteStore, one async
no-op durable subscriber (attempt recorded before, ack after each delivery).

``concurrency`` publisher tasks each ``await bus.publish(...)`` in a loop, so every
publish returns only after its event is committed (group commit batches them).
Reports events/s, p50/p99 publish latency (publish call to return, i.e. commit +
handler), the loop's ticker delay, and the process CPU time per event (all threads:
steadier than events/s when other work shares the machine, as it counts what the
bus spends, not what it is given). Run: ``python benchmarks/durable.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from aperion_event_bus import Event, EventBus
from aperion_event_bus.storage import SQLiteStore


async def run(sync: str, events: int, concurrency: int, rate: float = 0) -> str:
    """One run on a fresh database in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="aperion-durable-") as directory:
        return await _run(Path(directory) / "events.db", sync, events, concurrency, rate)


async def _run(path: Path, sync: str, events: int, concurrency: int, rate: float) -> str:
    bus = EventBus(store=SQLiteStore(path, synchronous=sync))  # type: ignore[arg-type]
    handled = 0

    @bus.on("order.paid", name="billing", durable=True)
    async def bill(e: Event) -> None:
        nonlocal handled
        handled += 1

    latencies: list[float] = []
    delays: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            delays.append(time.perf_counter() - t0 - 0.001)

    per_task = events // concurrency

    async def publisher(w: int) -> None:
        for i in range(per_task):
            t0 = time.perf_counter()
            await bus.publish("order.paid", {"w": w, "i": i})
            latencies.append(time.perf_counter() - t0)

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        await bus.publish("order.paid", {"w": 0, "i": i})
        latencies.append(time.perf_counter() - t0)

    async def open_loop() -> None:
        """Publishes started at ``rate`` per second on a 1 ms tick, a task each."""
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        sent = 0
        while sent < per_task * concurrency:
            due = min(per_task * concurrency, int((time.perf_counter() - start) * rate))
            while sent < due:
                task = asyncio.create_task(one(sent))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.001)
        while tasks:
            await asyncio.gather(*tasks)

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    if rate:
        await open_loop()
    else:
        await asyncio.gather(*(publisher(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stop.set()
    await tick
    await bus.close()
    latencies.sort()
    delays.sort()
    n = len(latencies)
    return (
        f"synchronous={sync}: {n / elapsed:,.0f} durable events/s ({n:,} events, "
        + (f"offered at {rate:,.0f}/s, a task each" if rate else f"{concurrency} publishers")
        + f", {handled:,} handled); publish latency p50 {latencies[n // 2] * 1e3:.2f} ms, "
        f"p99 {latencies[int(n * 0.99)] * 1e3:.2f} ms; ticker delay p99 "
        f"{delays[int(len(delays) * 0.99)] * 1e3:.2f} ms, max {max(delays) * 1e3:.2f} ms; "
        f"CPU {cpu / n * 1e6:.1f} us/event (all threads)"
    )


async def idle_ticker(seconds: float = 2.0) -> str:
    """The same ticker on an idle loop: the machine's own scheduling noise (a VM's
    stolen time shows here), the floor under the ticker figures of the runs."""
    await asyncio.sleep(0.2)  # past start-up work (imports' garbage, first allocations)
    delays: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        delays.append(time.perf_counter() - t0 - 0.001)
    delays.sort()
    return (
        f"idle loop (reference): ticker delay p99 {delays[int(len(delays) * 0.99)] * 1e3:.2f} ms, "
        f"max {delays[-1] * 1e3:.2f} ms over {seconds:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=150)
    parser.add_argument(
        "--rate", type=float, default=0, help="open loop: publishes started per second (0: closed loop)"
    )
    parser.add_argument("--sync", nargs="+", choices=("NORMAL", "FULL"), default=["NORMAL", "FULL"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    events = 10_000 if args.quick else args.events
    print(asyncio.run(idle_ticker(0.5 if args.quick else 2.0)), flush=True)
    for sync in args.sync:
        print(asyncio.run(run(sync, events, args.concurrency, args.rate)), flush=True)


if __name__ == "__main__":
    main()
