"""Child process for test_crash_recovery: appends (and acks) until it is SIGKILLed.

Usage: python crash_child.py DB_PATH SYNCHRONOUS SEED

Prints ``READY`` once the store is open, then ``A <event_id>`` after each append has
returned (committed), ``B <event_id>`` before an ack is sent (awaited, or deferred
with ``ack_nowait``) and ``K <event_id>`` after an awaited ack has returned, each line
written at once (``crash_harness.report``) so the parent knows exactly what was
reported committed.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading

from crash_harness import READY, report

from aperion_event_bus.events import Event
from aperion_event_bus.storage.sqlite import SQLiteStore

NAME = "crash-sub"


async def appender(store: SQLiteStore, rng: random.Random, worker: int) -> None:
    i = 0
    while True:
        i += 1
        event = Event("crash.test", {"worker": worker, "i": i, "blob": "x" * rng.randint(0, 3000)})
        if rng.random() < 0.1:
            batch = [event, Event("crash.test", {"worker": worker, "i": -i})]
            await store.append_many(batch, [NAME])
            for e in batch:
                report("A", e.event_id)
        else:
            await store.append(event, [NAME])
            report("A", event.event_id)
        roll = rng.random()
        if roll < 0.3:
            report("B", event.event_id)  # an ack may commit from here on
            await store.ack(event.event_id, NAME)
            report("K", event.event_id)
        elif roll < 0.5:
            report("B", event.event_id)  # deferred: commits with a later transaction
            store.ack_nowait(event.event_id, NAME)
        elif roll < 0.55:
            await store.record_attempt(event.event_id, NAME)
        elif roll < 0.6:
            store.record_attempt_nowait(event.event_id, NAME)


def sync_appender(store: SQLiteStore, seed: int) -> None:
    rng = random.Random(seed)
    while True:
        event = Event("crash.sync", {"r": rng.random()})
        store.append_sync(event, [NAME])
        report("A", event.event_id)


async def main() -> None:
    path, synchronous, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = SQLiteStore(path, synchronous=synchronous, max_batch=200).open()  # type: ignore[arg-type]
    report(READY)  # first line, before any appender can print
    threading.Thread(target=sync_appender, args=(store, seed), daemon=True).start()
    rngs = [random.Random(seed * 100 + w) for w in range(20)]
    await asyncio.gather(*(appender(store, rngs[w], w) for w in range(20)))


if __name__ == "__main__":
    asyncio.run(main())
