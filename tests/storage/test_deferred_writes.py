"""Deferred writes (``ack_nowait``, ``record_attempt_nowait``): folded into the next
transaction, durable once it commits, redelivered when it never did."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aperion_event_bus import Event, EventBus, delivery_attempt
from aperion_event_bus.storage._writer import GroupCommitWriter
from aperion_event_bus.storage.sqlite import SQLiteStore, StoreError

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "events.db").open()
    yield s
    s.close()


def _writer(store: SQLiteStore) -> GroupCommitWriter:
    writer = store._writer
    assert writer is not None
    return writer


def _hold_writer(store: SQLiteStore) -> tuple[threading.Event, threading.Event]:
    """Park the writer thread inside a transaction (a test-seam op) until released."""
    entered, release = threading.Event(), threading.Event()

    def park(conn: Any, runs: list[Any]) -> list[Any]:
        entered.set()
        release.wait(10)
        return [None] * len(runs)

    writer = _writer(store)
    writer._handlers["park"] = park
    threading.Thread(target=store._call_sync, args=("park", None), daemon=True).start()
    assert entered.wait(10)
    return entered, release


async def test_deferred_acks_commit_in_the_next_append_transaction(store: SQLiteStore) -> None:
    events = [Event("order.paid", {"n": i}) for i in range(4)]
    await store.append_many(events, ["a"])
    _, release = _hold_writer(store)
    before = store.stats()
    for e in events[:3]:
        store.ack_nowait(e.event_id, "a")
    store.record_attempt_nowait(events[3].event_id, "a")
    late = Event("order.paid", {"n": 99})
    append = asyncio.ensure_future(store.append(late, ["a"]))
    await asyncio.sleep(0.05)
    assert store.pending_count("a") == 4  # nothing deferred is committed yet
    release.set()
    await append  # its transaction carries the deferred acks and the attempt
    after = store.stats()
    assert after.transactions - before.transactions == 2  # the parked one + one more
    assert [(e.event_id, n) for e, n in store.pending_deliveries("a")] == [
        (events[3].event_id, 1),
        (late.event_id, 0),
    ]


async def test_a_deferred_ack_alone_commits_without_flush(store: SQLiteStore) -> None:
    e = Event("order.paid", {})
    await store.append(e, ["a"])
    store.ack_nowait(e.event_id, "a")  # nothing else queued: it wakes the writer itself
    deadline = time.monotonic() + 5
    while store.pending_count("a") and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert store.pending_count("a") == 0


async def test_a_failed_transaction_leaves_deferred_acks_pending(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    e = Event("order.paid", {})
    await store.append(e, ["a"])
    _, release = _hold_writer(store)

    def boom(conn: Any, runs: list[Any]) -> list[Any]:
        raise OSError("disk on fire")

    _writer(store)._handlers["boom"] = boom
    store.ack_nowait(e.event_id, "a")
    failing = asyncio.ensure_future(store._call("boom", None))
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.ERROR, logger="aperion_event_bus.storage"):
        release.set()
        with pytest.raises(StoreError):
            await failing
    assert "1 deferred ops not committed" in caplog.text
    await store.flush()
    assert store.pending_count("a") == 1  # at-least-once: the delivery comes back


_CHILD = textwrap.dedent(
    """
    import asyncio, sqlite3, sys
    from aperion_event_bus import EventBus

    async def main():
        bus = EventBus(store="sqlite:///" + sys.argv[1])
        lock = []

        @bus.on("order.paid", name="billing", durable=True)
        async def bill(event):
            if event.payload["n"] == 2:  # from now on no transaction can commit
                conn = sqlite3.connect(sys.argv[1], isolation_level=None)
                conn.execute("BEGIN IMMEDIATE")
                lock.append(conn)

        for n in range(3):
            result = await bus.publish("order.paid", {"n": n})
            print("HANDLED", result.event.event_id, flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


async def test_kill_before_the_deferred_ack_commits_redelivers(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=SRC),
    )
    assert child.stdout is not None
    handled: list[str] = []
    try:
        while len(handled) < 3:
            line = child.stdout.readline()
            assert line, "the child exited early"
            handled.append(line.split()[1].decode())
    finally:
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]

    bus = EventBus(store=f"sqlite:///{db}")
    got: list[tuple[str, int]] = []

    @bus.on("order.paid", name="billing", durable=True)
    async def bill(event: Event) -> None:
        got.append((event.event_id, delivery_attempt()))

    assert await asyncio.wait_for(bus.recover(), 10) >= 1
    await bus.close()
    # the last ack was queued but never committed: that delivery comes back; every
    # event whose publish returned is stored
    assert handled[2] in [eid for eid, _ in got]
    assert all(n >= 1 for _, n in got)
    assert [eid for eid, _ in got] == [eid for eid in handled if eid in dict(got)]


# -- acks by seq (``_ops.RecentSeqs``) ----------------------------------------------


def pending_ids(store: SQLiteStore, name: str) -> list[str]:
    return [e.event_id for e, _ in store.pending_deliveries(name)]


async def test_acks_by_remembered_seq_delete_exactly_their_deliveries(store: SQLiteStore) -> None:
    events = [Event("order.paid", {"n": i}) for i in range(10)]
    await store.append_many(events, ["a", "b"])
    for i in (2, 3, 4):  # one run of consecutive seqs: a range delete
        store.ack_nowait(events[i].event_id, "a")
    for i in (0, 5, 9, 5):  # gaps (and a repeat): deleted seq by seq
        store.ack_nowait(events[i].event_id, "b")
    await store.flush()
    assert pending_ids(store, "a") == [e.event_id for i, e in enumerate(events) if i not in (2, 3, 4)]
    assert pending_ids(store, "b") == [e.event_id for i, e in enumerate(events) if i not in (0, 5, 9)]


async def test_an_ack_after_a_rolled_back_append_cannot_hit_the_seq_reused(
    store: SQLiteStore,
) -> None:
    """The seqs of a rolled-back append are handed out again: an ack naming the
    rolled-back event must not delete the delivery of the event now holding its seq."""
    _, release = _hold_writer(store)

    def boom(conn: Any, runs: list[Any]) -> list[Any]:
        raise OSError("disk on fire")

    _writer(store)._handlers["boom"] = boom
    lost = Event("order.paid", {"n": 1})
    appending = asyncio.ensure_future(store.append(lost, ["a"]))
    failing = asyncio.ensure_future(store._call("boom", None))
    await asyncio.sleep(0.05)
    release.set()
    for waiting in (appending, failing):
        with pytest.raises(StoreError):
            await waiting
    kept = Event("order.paid", {"n": 2})
    await store.append(kept, ["a"])
    store.ack_nowait(lost.event_id, "a")
    await store.flush()
    assert pending_ids(store, "a") == [kept.event_id]


async def test_an_event_stored_again_under_a_new_seq_is_acked_under_that_seq(
    store: SQLiteStore,
) -> None:
    e = Event("order.paid", {"n": 1})
    await store.append(e, [])
    store.compact(max_age_seconds=0)  # deleted; its seq is gone for good
    assert store.count_events() == 0
    other = Event("order.paid", {"n": 2})
    await store.append_many([e, other, e], ["a"])  # a duplicate id: seqs not known
    store.ack_nowait(e.event_id, "a")
    await store.flush()
    assert pending_ids(store, "a") == [other.event_id]
