"""The store-backed DLQ on an event loop: a put never waits for the disk, reads see
it at once, the size is counted (no read), and a put that cannot commit is
reported, not lost silently."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aperion_event_bus import DeadLetterQueue, Event, EventBus, delivery_attempt
from aperion_event_bus.dlq import FailureReason
from aperion_event_bus.storage import _ops
from aperion_event_bus.storage._writer import Op
from aperion_event_bus.storage.sqlite import SQLiteDLQBackend, SQLiteStore, StoreError


def _stored_ids(path: Path) -> list[str]:
    """The committed entries, read by a connection of our own (newest first)."""
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM dlq ORDER BY pos DESC")]


@pytest.fixture
def held_writer() -> Iterator[tuple[threading.Event, Any]]:
    """``hold(store)`` queues an op that keeps the store's writer busy (inside a
    transaction) until ``gate`` is set; the gate opens by itself after 5 s."""
    gate = threading.Event()
    timer = threading.Timer(5.0, gate.set)
    timer.start()

    def block(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
        gate.wait()
        return [None] * len(runs)

    def hold(store: SQLiteStore) -> None:
        writer = store._writer
        assert writer is not None
        writer._handlers["test_hold"] = block
        writer.submit(Op("test_hold", None))

    yield gate, hold
    gate.set()
    timer.cancel()


async def test_a_put_on_the_loop_returns_before_a_held_writer_commits(
    tmp_path: Path, held_writer: tuple[threading.Event, Any]
) -> None:
    gate, hold = held_writer
    path = tmp_path / "e.db"
    bus = EventBus(store=SQLiteStore(path, synchronous="FULL"), dead_letter_queue=True)
    dlq = bus.dead_letter_queue
    assert bus.store is not None

    @bus.on("pay.x")
    async def broken(e: Event) -> None:
        hold(bus.store)  # the writer is busy when the failure is dead-lettered
        await asyncio.sleep(0.05)
        raise RuntimeError("card declined")

    started = time.monotonic()
    await bus.publish("pay.x", {"n": 1})
    await bus.drain(10)
    # same task, right away: the entry is visible although nothing was committed
    [entry] = dlq.get_all()
    assert not gate.is_set() and time.monotonic() - started < 4  # the loop never waited
    assert dlq.size() == 1 and dlq.get(entry.id) is not None
    assert dlq.get_by_reason(FailureReason.HANDLER_ERROR)[0].id == entry.id
    assert _stored_ids(path) == []
    gate.set()
    await bus.store.flush()  # committed in order with the rest of the writer's work
    assert _stored_ids(path) == [entry.id]
    assert dlq.size() == 1 and [e.id for e in dlq.get_all()] == [entry.id]
    await bus.close()
    again = SQLiteStore(path).open()
    assert [e.id for e in DeadLetterQueue(backend=again.dlq_backend()).get_all()] == [entry.id]
    again.close()


async def test_entries_behind_and_committed_read_back_in_put_order(
    tmp_path: Path, held_writer: tuple[threading.Event, Any]
) -> None:
    gate, hold = held_writer
    store = SQLiteStore(tmp_path / "e.db").open()
    dlq = DeadLetterQueue(backend=store.dlq_backend())
    first = await asyncio.to_thread(
        dlq.add, Event("a.b", {"i": 0}), "handler_error", "x"
    )  # a plain thread: committed when add returns
    hold(store)
    second = dlq.add(Event("a.b", {"i": 1}), "handler_timeout", "y")  # on the loop: behind
    third = dlq.add(Event("c.d", {"i": 2}), "handler_error", "z")
    assert not gate.is_set()  # neither add waited for the held writer
    assert [e.id for e in dlq.get_all()] == [third, second, first]
    assert [e.id for e in dlq.get_all(limit=2)] == [third, second]
    assert [e.id for e in dlq.get_by_event_type("a.b")] == [second, first]
    assert [e.id for e in dlq.get_by_reason("handler_error")] == [third, first]
    assert dlq.size() == 3 and dlq.backend.oldest().id == first  # type: ignore[union-attr]
    removing = asyncio.ensure_future(asyncio.to_thread(dlq.remove, second))
    gate.set()
    assert await removing is True  # queued after the put: it finds the entry
    assert [e.id for e in dlq.get_all()] == [third, first] and dlq.size() == 2
    store.close()


def test_size_is_counted_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "e.db"
    store = SQLiteStore(path).open()
    backend = store.dlq_backend()
    assert store.dlq_backend() is backend  # one per store
    dlq = DeadLetterQueue(backend=backend)
    ids = [dlq.add(Event("a.b", {"i": i}), "handler_error", "x") for i in range(5)]
    old = dlq.get(ids[0])
    assert old is not None
    old.timestamp -= 7200
    backend.update(old)
    backend.put(old)  # a re-put replaces: still 5

    def no_reads(*args: Any) -> Any:
        raise AssertionError("size() must not read the database")

    monkeypatch.setattr(backend, "_fetchone", no_reads)
    assert dlq.size() == 5
    assert dlq.remove(ids[1]) is True and dlq.remove(ids[1]) is False
    assert dlq.size() == 4
    assert dlq.clear_older_than(hours=1) == 1 and dlq.size() == 3
    monkeypatch.undo()
    store.close()
    reopened = SQLiteStore(path).open()
    assert SQLiteDLQBackend(reopened).size() == 3  # counted at start, in the writer's order
    assert DeadLetterQueue(backend=reopened.dlq_backend()).clear() == 3
    assert reopened.dlq_backend().size() == 0
    reopened.close()


async def test_a_put_that_cannot_commit_is_logged_counted_and_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "e.db"
    store = SQLiteStore(path).open()
    dlq = DeadLetterQueue(backend=store.dlq_backend())
    writer = store._writer
    assert writer is not None

    def disk_full(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
        raise sqlite3.OperationalError("database or disk is full")

    writer._handlers[_ops.DLQ_PUT] = disk_full
    entry_id = dlq.add(Event("a.b", {}), "handler_error", "x")
    assert dlq.size() == 1  # behind, until the commit fails
    with contextlib.suppress(StoreError):
        await store.flush()  # fails too when it shares the put's transaction
    await store.flush()
    assert dlq.get(entry_id) is None and dlq.size() == 0 and dlq.get_all() == []
    assert dlq.get_stats()["persist_write_errors"] == 1
    assert "could not be stored" in caplog.text and entry_id in caplog.text
    store.close()


# ------------------------------------------- durable deliveries the DLQ took over


async def test_a_dead_lettered_durable_delivery_is_marked_dead_not_redelivered(
    tmp_path: Path, held_writer: tuple[threading.Event, Any]
) -> None:
    gate, hold = held_writer
    path = tmp_path / "e.db"
    healthy = False
    attempts: list[int] = []

    async def billing(e: Event) -> None:
        attempts.append(delivery_attempt())
        if not healthy:
            hold(bus.store)  # the writer is busy while the failure is dead-lettered
            raise RuntimeError("card declined for jane@example.com")

    bus = EventBus(store=SQLiteStore(path), dead_letter_queue=True)
    store = bus.store
    assert store is not None
    bus.on("order.paid", billing, name="billing", durable=True)
    await bus.publish("order.paid", {"n": 1})
    await bus.drain(10)
    assert not gate.is_set()  # neither the DLQ entry nor the dead mark waited
    assert store.pending_count("billing") == 1  # not committed yet: still pending
    gate.set()
    await store.flush()
    assert store.pending_count("billing") == 0 and store.dead_count("billing") == 1
    with sqlite3.connect(path) as conn:
        [(error,)] = conn.execute("SELECT error FROM dead_deliveries").fetchall()
    assert "jane@example.com" not in error and "RuntimeError" in error  # redacted
    assert await bus.recover() == 0 and attempts == [1]
    [entry] = bus.dead_letter_queue.get_all()
    healthy = True
    assert await bus.dead_letter_queue.aretry(entry.id, bus) is True  # no ack needed
    await store.flush()
    assert store.pending_count() == 0 and bus.dead_letter_queue.size() == 0
    await bus.close()

    again = EventBus(store=SQLiteStore(path), dead_letter_queue=True)
    again.on("order.paid", billing, name="billing", durable=True)
    assert await again.recover() == 0  # after a restart too
    assert attempts == [1, 1]
    await again.close()


def test_sync_durable_failures_are_marked_dead_too(tmp_path: Path) -> None:
    bus = EventBus(store=SQLiteStore(tmp_path / "e.db"), dead_letter_queue=True)
    store = bus.store
    assert store is not None

    def billing(e: Event) -> None:
        raise RuntimeError("declined")

    bus.subscribe(billing, "order.paid", name="billing", durable=True)
    bus.emit("order.paid", {}, wait_for_handlers=True)
    store.flush_sync()
    assert store.pending_count("billing") == 0 and store.dead_count("billing") == 1
    assert bus.recover_sync(5) == 0
    bus.shutdown(5)


@pytest.mark.parametrize("dlq", [None, "memory"], ids=["no DLQ", "DLQ in memory"])
async def test_without_a_dlq_that_survives_a_restart_the_delivery_stays_pending(
    tmp_path: Path, dlq: str | None
) -> None:
    failures = 0

    async def billing(e: Event) -> None:
        nonlocal failures
        failures += 1
        raise RuntimeError("declined")

    bus = EventBus(
        store=SQLiteStore(tmp_path / "e.db"),
        dead_letter_queue=DeadLetterQueue() if dlq else None,
    )
    store = bus.store
    assert store is not None
    bus.on("order.paid", billing, name="billing", durable=True)
    await bus.publish("order.paid", {})
    await bus.drain(5)
    await store.flush()
    assert store.pending_count("billing") == 1 and store.dead_count() == 0
    assert await bus.recover() == 1 and failures == 2  # redelivered, as before
    await bus.close()


async def test_an_error_text_with_a_lone_surrogate_fails_nothing_else(tmp_path: Path) -> None:
    """The DLQ entry and the dead mark of a handler error whose message holds a lone
    surrogate are stored (escaped); the group commit they share with other
    publishers' appends does not fail."""
    from aperion_event_bus import EventBus

    bus = EventBus(store=f"sqlite:///{tmp_path / 'e.db'}", dead_letter_queue=True)

    async def fails(event: Any) -> None:
        raise RuntimeError("bad \ud800 text")

    bus.on("job.*", fails, name="w", durable=True)
    await bus.publish("job.a", {})
    others = await asyncio.gather(
        *(bus.publish("other.thing", {"n": n}) for n in range(5)), return_exceptions=True
    )
    assert not [o for o in others if isinstance(o, BaseException)]
    store = bus.store
    assert store is not None
    await store.flush()
    assert bus.dead_letter_queue.size() == 1
    assert store.dead_count("w") == 1 and store.pending_count("w") == 0
    (entry,) = bus.dead_letter_queue.get_all()
    assert entry.error.startswith("RuntimeError: bad ")
    await bus.close()
