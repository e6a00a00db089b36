"""Benchmark the SQLite event store: durable append with group commit, and replay.

    python benchmarks/store.py                  # NORMAL and FULL, default sizes
    python benchmarks/store.py --sync NORMAL --events 300000 --concurrency 1000
    python benchmarks/store.py --sync NORMAL --concurrency 150 --repeat 3   # the latency profile

For each ``synchronous`` level it measures, on a fresh database in a temporary dir:

* closed loop: ``--concurrency`` tasks each awaiting ``store.append(event, ["sub"])``
  back to back (one pending delivery row per event) -> events/s, commit latency
  p50/p99 (call to return), and the loop ticker's delay (a task sleeping 1 ms);
* open loop: appends started at a fixed ``--rate`` (events/s) on a 1 ms tick,
  each as its own task -> commit latency p50/p99 and ticker delay at that load;
* acks: one ``ack_nowait`` per event, then ``flush`` -> acks/s;
* replay: ``iter_events`` and ``aiter_events`` over everything stored -> events/s.

Events are created before timing starts, so the numbers are the store's cost.
``--repeat N`` runs the closed and open loops N times each (on the same store):
on a shared machine single runs are noisy. Each run also prints the WAL checkpoints
the writer ran and the largest ``-wal`` file seen (sampled every 10 ms).

Commit latency is bounded below by Little's law: with C appenders in flight at
R events/s it is at least C / R on average (1,000 appenders at 50,000/s: 20 ms), so
latency targets are measured with 100-200 appenders or with the open loop.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout

from aperion_event_bus.events import Event
from aperion_event_bus.storage.sqlite import SQLiteStore


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def make_events(n: int) -> list[Event]:
    return [
        Event(
            "order.created",
            {"order_id": i, "customer": f"c{i % 977}", "total": i * 1.25, "items": [1, 2, 3]},
            correlation_id=f"req-{i // 10}",
        )
        for i in range(n)
    ]


class WalWatch:
    """Samples the ``-wal`` file size and the writer's checkpoint count during a run."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.peak = 0
        self._task: asyncio.Task[None] | None = None
        self._checkpoints = 0

    async def _run(self) -> None:
        wal = self.store.path + "-wal"
        while True:
            try:
                self.peak = max(self.peak, os.path.getsize(wal))
            except OSError:
                pass
            await asyncio.sleep(0.01)

    def __enter__(self) -> WalWatch:
        self._checkpoints = self.store.stats().checkpoints
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def summary(self) -> str:
        checkpoints = self.store.stats().checkpoints - self._checkpoints
        return f"{checkpoints} checkpoints, WAL file peak {self.peak / 1e6:.1f} MB"


class Ticker:
    """Measures how late a 1 ms sleep wakes up: the loop's responsiveness."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            self.delays.append(time.perf_counter() - start - 0.001)

    def __enter__(self) -> Ticker:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def summary(self) -> str:
        return (
            f"ticker delay p99 {pct(self.delays, 0.99) * 1e3:.2f} ms, "
            f"max {max(self.delays, default=0.0) * 1e3:.2f} ms"
        )


async def closed_loop(store: SQLiteStore, events: list[Event], concurrency: int) -> None:
    latencies: list[float] = []
    it = iter(events)

    async def worker() -> None:
        append = store.append
        clock = time.perf_counter
        for event in it:
            start = clock()
            await append(event, ("sub",))
            latencies.append(clock() - start)

    before = store.stats()
    await asyncio.sleep(0.05)
    with Ticker() as ticker, WalWatch(store) as wal:
        await asyncio.sleep(0.01)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    after = store.stats()
    commits = after.transactions - before.transactions
    print(
        f"  closed loop, {concurrency} concurrent appenders: {len(events) / elapsed:,.0f} events/s "
        f"({len(events):,} in {elapsed:.2f} s, {commits:,} commits, "
        f"{len(events) / max(commits, 1):.0f} events/commit)"
    )
    print(
        f"    commit latency p50 {pct(latencies, 0.5) * 1e3:.2f} ms, "
        f"p99 {pct(latencies, 0.99) * 1e3:.2f} ms; {ticker.summary()}; {wal.summary()}"
    )


async def open_loop(store: SQLiteStore, events: list[Event], rate: float) -> None:
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    outstanding = 0

    async def one(event: Event) -> None:
        nonlocal outstanding
        start = time.perf_counter()
        await store.append(event, ("sub",))
        latencies.append(time.perf_counter() - start)
        outstanding -= 1
        if outstanding == 0 and sent == len(events):
            done.set()

    sent = 0
    in_flight: set[asyncio.Task[None]] = set()
    with Ticker() as ticker, WalWatch(store) as wal:
        start = time.perf_counter()
        while sent < len(events):
            due = min(len(events), int((time.perf_counter() - start) * rate))
            while sent < due:
                outstanding += 1
                sent += 1
                task = loop.create_task(one(events[sent - 1]))
                in_flight.add(task)  # only unfinished tasks are kept (no GC growth)
                task.add_done_callback(in_flight.discard)
            await asyncio.sleep(0.001)
        if outstanding:
            await done.wait()
        elapsed = time.perf_counter() - start
    print(
        f"  open loop at {rate:,.0f} events/s offered: achieved {len(events) / elapsed:,.0f} events/s; "
        f"commit latency p50 {pct(latencies, 0.5) * 1e3:.2f} ms, "
        f"p99 {pct(latencies, 0.99) * 1e3:.2f} ms; {ticker.summary()}; {wal.summary()}"
    )


async def acks(store: SQLiteStore, events: list[Event]) -> None:
    start = time.perf_counter()
    for event in events:
        store.ack_nowait(event.event_id, "sub")
    await store.flush()
    elapsed = time.perf_counter() - start
    print(
        f"  acks (ack_nowait + flush): {len(events) / elapsed:,.0f} acks/s; "
        f"pending left {store.pending_count('sub')}"
    )


async def replay(store: SQLiteStore) -> None:
    total = store.count_events()
    start = time.perf_counter()
    n = sum(1 for _ in store.iter_events())
    sync_elapsed = time.perf_counter() - start
    with Ticker() as ticker:
        start = time.perf_counter()
        m = 0
        async for _ in store.aiter_events():
            m += 1
        async_elapsed = time.perf_counter() - start
    assert n == m == total, (n, m, total)
    print(
        f"  replay {total:,} events: iter_events {n / sync_elapsed:,.0f} events/s, "
        f"aiter_events {m / async_elapsed:,.0f} events/s ({ticker.summary()})"
    )


async def run(sync: str, args: argparse.Namespace, directory: str) -> None:
    path = os.path.join(directory, f"bench-{sync.lower()}.db")
    n = args.events if sync == "NORMAL" else max(1, args.events // args.full_divisor)
    print(f"synchronous={sync}")
    with SQLiteStore(path, synchronous=sync, max_batch=args.max_batch) as store:  # type: ignore[arg-type]
        await store.append_many(make_events(2000), ("warmup",))  # warm-up, not timed
        runs = [make_events(n) for _ in range(args.repeat)]
        open_runs = (
            [make_events(min(n, int(args.rate * 3))) for _ in range(args.repeat)]
            if args.rate > 0
            else []
        )
        if args.gc_freeze:
            gc.collect()
            gc.freeze()  # the benchmark's own pre-made events are not the store's garbage
        for events in runs:
            await closed_loop(store, events, args.concurrency)
            await acks(store, events)
        for open_events in open_runs:
            await open_loop(store, open_events, args.rate)
        await replay(store)
        size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
        print(f"  database size {size / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sync", nargs="+", default=["NORMAL", "FULL"], choices=["NORMAL", "FULL"])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--full-divisor", type=int, default=2, help="FULL runs events/divisor")
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50_000, help="open-loop rate; 0 skips it")
    parser.add_argument("--max-batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of the closed and open loop")
    parser.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="do not gc.freeze() the pre-made events (their full-GC scans then show up as "
        "loop stalls that are not the store's)",
    )
    parser.add_argument(
        "--dir", default=None, help="where to put the database (default: a temp dir)"
    )
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}, sqlite {__import__('sqlite3').sqlite_version}, "
        f"{os.cpu_count()} CPUs, one run per figure"
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        for sync in args.sync:
            asyncio.run(run(sync, args, directory))


if __name__ == "__main__":
    main()
