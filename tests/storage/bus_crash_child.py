"""Child process for test_bus_crash_recovery: publishes through an ``EventBus`` with a
store, durable handlers working, until the parent SIGKILLs it.

Usage: python bus_crash_child.py DB_PATH SYNCHRONOUS PROFILE SEED

``PROFILE`` (see ``PROFILES``): ``hot``, 150 publishers of mostly one event type
whose handler mostly finishes without suspending (the commonest group commit, one
statement, and with NORMAL the split of the work in two halves), or ``mixed``, 16
publishers of three event types, handlers that suspend or sleep, and a plain
thread publishing every millisecond (general transactions: attempt records, acks of
both names, queued ops).

Lines (``crash_harness.report``: written at once, in the order they happened on
each thread):

- ``READY`` once the handlers are subscribed, before anything is published;
- ``S <publisher> <event_id>`` just before ``await bus.publish(event)`` on the loop
  (``publisher`` a number) or ``publish_nowait(event)`` on a plain thread
  (``publisher`` ``thread``), and ``P <publisher> <event_id>`` once it returned (the
  thread also uses ``emit``, which makes the event: ``P`` only);
- ``B <name> <event_id>`` when the durable handler ``name`` begins an event and
  ``H <name> <event_id>`` when its work is done (its ack is queued after that);
- ``STATS <transactions> <one-statement commits> <splits>`` of the store's writer,
  every 20 ms.

A handler's work is ``payload["nap"]`` seconds of sleep (``None``: the async handler
finishes without suspending). The async handler runs on the loop thread, so a line
it writes is followed by its ack (``H``) or its first attempt record (``B``, when it
suspends) before any later line of a loop publisher; the sync handler's attempt is
recorded before its ``B``.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from crash_harness import READY, report

from aperion_event_bus import Event, EventBus
from aperion_event_bus.storage.sqlite import SQLiteStore

ASYNC_NAME = "crash-async"  # every job.* event
SYNC_NAME = "crash-sync"  # job.audit only: its deliveries differ from ASYNC_NAME's
PATTERNS = {ASYNC_NAME: "job.*", SYNC_NAME: "job.audit"}
THREAD = "thread"


@dataclass(frozen=True)
class Profile:
    publishers: int
    wait: float  # share of publishes that wait for the handlers
    types: tuple[tuple[str, float], ...]  # (event type, cumulative probability)
    naps: tuple[tuple[float | None, float], ...]  # (handler work, cumulative probability)
    thread_pause: float  # seconds between the plain thread's publishes


PROFILES = {
    "hot": Profile(
        150,
        0.3,
        (("job.run", 0.998), ("job.audit", 1.0)),
        ((None, 0.995), (0.0, 0.997), (0.001, 0.999), (0.03, 1.0)),
        0.02,
    ),
    "mixed": Profile(
        16,
        0.5,
        (("job.run", 0.75), ("job.audit", 0.95), ("note.misc", 1.0)),
        ((None, 0.45), (0.0, 0.95), (0.001, 0.995), (0.03, 1.0)),
        0.001,
    ),
}


def _pick(rng: random.Random, table: tuple[tuple[Any, float], ...]) -> Any:
    roll = rng.random()
    return next(value for value, cumulative in table if roll < cumulative)


def random_event(rng: random.Random, profile: Profile, publisher: object) -> Event:
    payload = {
        "publisher": publisher,
        "nap": _pick(rng, profile.naps),
        "blob": "x" * rng.randint(0, 400),
    }
    return Event(_pick(rng, profile.types), payload)


async def publisher(
    bus: EventBus, profile: Profile, number: int, rng: random.Random, first: threading.Event
) -> None:
    while True:
        event = random_event(rng, profile, number)
        report("S", number, event.event_id)
        result = await bus.publish(event, wait=rng.random() < profile.wait)
        assert result.event.event_id == event.event_id
        report("P", number, event.event_id)
        if not first.is_set():
            first.set()


def thread_publisher(
    bus: EventBus, profile: Profile, rng: random.Random, first: threading.Event
) -> None:
    first.wait()  # the bus runs on the main loop once a loop publish went through
    while True:
        event = random_event(rng, profile, THREAD)
        if rng.random() < 0.5:
            report("S", THREAD, event.event_id)
            accepted = bus.publish_nowait(event)
            assert accepted is not None and accepted.event_id == event.event_id
            report("P", THREAD, event.event_id)
        else:  # emit makes the envelope: its id is known once it returned
            report("P", THREAD, bus.emit(event.event_type, dict(event.payload)))
        time.sleep(profile.thread_pause)


async def stats(store: SQLiteStore) -> None:
    while True:
        writer = store._writer
        if writer is not None:
            report("STATS", writer.transactions, writer.one_statement_commits, writer.splits)
        await asyncio.sleep(0.02)


async def main() -> None:
    path, synchronous, profile_name, seed_text = sys.argv[1:5]
    profile, seed = PROFILES[profile_name], int(seed_text)
    store = SQLiteStore(path, synchronous=synchronous)  # type: ignore[arg-type]
    bus = EventBus(
        store=store, handler_timeout=None, max_pending_events=2000, overflow_policy="block"
    )

    async def async_handler(event: Event) -> None:
        report("B", ASYNC_NAME, event.event_id)
        nap = event.payload["nap"]
        if nap is not None:
            await asyncio.sleep(nap)
        report("H", ASYNC_NAME, event.event_id)

    def sync_handler(event: Event) -> None:
        report("B", SYNC_NAME, event.event_id)
        nap = event.payload["nap"]
        time.sleep(0.002 if nap is None else nap)
        report("H", SYNC_NAME, event.event_id)

    bus.on(PATTERNS[ASYNC_NAME], async_handler, name=ASYNC_NAME, durable=True)
    bus.on(PATTERNS[SYNC_NAME], sync_handler, name=SYNC_NAME, durable=True)
    report(READY)
    first = threading.Event()
    threading.Thread(
        target=thread_publisher, args=(bus, profile, random.Random(seed), first), daemon=True
    ).start()
    publishers = range(profile.publishers)
    rngs = [random.Random(seed * 1000 + n) for n in publishers]
    await asyncio.gather(
        stats(store), *(publisher(bus, profile, n, rngs[n], first) for n in publishers)
    )


if __name__ == "__main__":
    asyncio.run(main())
