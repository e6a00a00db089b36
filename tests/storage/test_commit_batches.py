"""Durable publishes through the bus travel as loop-side batches (one writer op and
one shared future per loop iteration): committed together, failed together when
their transaction fails, not disturbed by a cancelled publisher, recovered in order."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aperion_event_bus import Event, EventBus
from aperion_event_bus.errors import SerializationError
from aperion_event_bus.storage._batch import BATCH_LIMIT
from aperion_event_bus.storage.sqlite import SQLiteStore, StoreError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "events.db").open()
    yield s
    s.close()


async def test_publishes_of_one_iteration_share_one_op_and_one_future(tmp_path: Path) -> None:
    bus = EventBus(store=SQLiteStore(tmp_path / "e.db"))
    assert bus.store is not None
    n = 3 * BATCH_LIMIT + 5
    before = bus.store.stats()
    results = await asyncio.gather(*(bus.publish("order.paid", {"i": i}) for i in range(n)))
    after = bus.store.stats()
    assert after.events_written - before.events_written == n
    assert after.ops - before.ops <= 4  # batches of at most BATCH_LIMIT events
    assert after.loop_callbacks - before.loop_callbacks <= after.transactions - before.transactions
    assert all(bus.store.get_event(r.event.event_id) is not None for r in results)
    await bus.close()


async def test_join_commit_shares_the_future_until_the_batch_is_queued(store: SQLiteStore) -> None:
    first, i = store.join_commit(Event("a.b", {}), ("s",))
    same, j = store.join_commit(Event("a.b", {}), ("s",))
    assert same is first and (i, j) == (0, 1)
    assert await first.future is None
    later, k = store.join_commit(Event("a.b", {}), ())
    assert later is not first and k == 0  # the old batch was handed over: a new one
    await later.future
    assert store.pending_count("s") == 2 and store.count_events() == 3


async def test_a_full_batch_is_queued_at_once(store: SQLiteStore) -> None:
    batches = {id(store.join_commit(Event("a.b", {"i": i}), ())[0]) for i in range(BATCH_LIMIT + 1)}
    assert len(batches) == 2
    await store.flush()  # queues the open batch first, then waits for both
    assert store.count_events() == BATCH_LIMIT + 1


async def test_batches_respect_max_batch(tmp_path: Path) -> None:
    bus = EventBus(store=SQLiteStore(tmp_path / "e.db", max_batch=10))
    assert bus.store is not None
    before = bus.store.stats()
    await asyncio.gather(*(bus.publish("a.b", {"i": i}) for i in range(95)))
    after = bus.store.stats()
    assert after.events_written - before.events_written == 95
    assert after.transactions - before.transactions >= 10  # at most 10 events each
    await bus.close()


async def test_a_cancelled_publisher_does_not_cancel_its_batch(tmp_path: Path) -> None:
    bus = EventBus(store=SQLiteStore(tmp_path / "e.db"))
    tasks = [asyncio.ensure_future(bus.publish("order.paid", {"i": i})) for i in range(50)]
    await asyncio.sleep(0)  # every task now awaits the same batch future
    tasks[7].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[7], asyncio.CancelledError)
    others = [r for i, r in enumerate(results) if i != 7]
    assert all(not isinstance(r, BaseException) for r in others)
    assert bus.store is not None
    assert all(bus.store.get_event(r.event.event_id) is not None for r in others)  # type: ignore[union-attr]
    await bus.close()


def _hold_writer(store: SQLiteStore) -> threading.Event:
    """Park the writer inside a transaction (a test-seam op) until the event is set."""
    assert store._writer is not None
    entered, release = threading.Event(), threading.Event()

    def park(conn: Any, runs: list[Any]) -> list[Any]:
        entered.set()
        release.wait(10)
        return [None] * len(runs)

    store._writer._handlers["park"] = park
    threading.Thread(target=store._call_sync, args=("park", None), daemon=True).start()
    assert entered.wait(10)
    return release


async def test_cancelling_waiters_twice_still_settles_the_rest(tmp_path: Path) -> None:
    bus = EventBus(store=SQLiteStore(tmp_path / "e.db"))
    assert bus.store is not None
    release = _hold_writer(bus.store)  # no commit can settle the batch meanwhile
    tasks = [asyncio.ensure_future(bus.publish("a.b", {"i": i})) for i in range(10)]
    await asyncio.sleep(0)
    tasks[0].cancel()
    await asyncio.sleep(0)  # the others now wait on the batch's fresh future
    tasks[1].cancel()
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [isinstance(r, asyncio.CancelledError) for r in results] == [True, True] + [False] * 8
    assert bus.store.count_events() == 10
    await bus.close()


async def test_an_unstorable_payload_fails_only_its_own_publish(tmp_path: Path) -> None:
    """A lone surrogate (no UTF-8 form) fails its publish with a SerializationError
    naming where it is; the other publishes of the batch commit."""
    bus = EventBus(store=SQLiteStore(tmp_path / "e.db"))
    results = await asyncio.gather(
        bus.publish("a.b", {"n": 1}),
        bus.publish("a.b", {"s": "\ud800"}),
        bus.publish("a.b", {"n": 2}),
        bus.publish("a.b", {"a": [1, {"b": "ok \udcff"}]}),
        return_exceptions=True,
    )
    assert isinstance(results[1], SerializationError)
    assert results[1].path == "payload['s']"
    assert "payload['s']" in str(results[1]) and "surrogate" in str(results[1])
    assert isinstance(results[3], SerializationError)
    assert results[3].path == "payload['a'][1]['b']"
    assert bus.store is not None
    for r in (results[0], results[2]):
        assert bus.store.get_event(r.event.event_id) is not None  # type: ignore[union-attr]
    assert bus.store.count_events() == 2
    await bus.close()


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"payload": {"\ud800": 1}}, "payload (a key)"),
        ({"source": "svc-\ud800"}, "source"),
        ({"correlation_id": "c\udfff"}, "correlation_id"),
    ],
)
async def test_store_append_names_where_the_unstorable_string_is(
    store: SQLiteStore, fields: dict[str, Any], path: str
) -> None:
    event = Event("a.b", fields.pop("payload", {"n": 1}), **fields)
    with pytest.raises(SerializationError) as info:
        await store.append(event)
    assert info.value.path == path
    assert event.event_id in str(info.value)
    with pytest.raises(SerializationError):
        store.append_many_sync([Event("a.b", {}), event])  # one op: both events fail
    assert store.count_events() == 0
    await store.append(Event("a.b", {}))
    assert store.count_events() == 1


async def publish_with_one_marked_failure(bus: EventBus) -> list[tuple[str, BaseException | None]]:
    """30 publishers x 20 awaited publishes; one event carries ``"fail": True`` (the
    tests make the transaction holding it fail). Returns (event id, StoreError or None)."""

    async def publisher(w: int) -> list[tuple[str, BaseException | None]]:
        out: list[tuple[str, BaseException | None]] = []
        for i in range(20):
            event = Event("order.paid", {"w": w, "i": i, "fail": w == 3 and i == 10})
            try:
                await bus.publish(event)
                out.append((event.event_id, None))
            except StoreError as exc:
                out.append((event.event_id, exc))
        return out

    return [o for per in await asyncio.gather(*(publisher(w) for w in range(30))) for o in per]


async def test_a_failed_commit_fails_exactly_the_publishers_of_its_batches(tmp_path: Path) -> None:
    """Pipelined batches: the transaction carrying the marked event fails; the
    publishers of the batches in it get the StoreError, every other publish returns."""
    bus = EventBus(store=SQLiteStore(tmp_path / "e.db"))
    store = bus.store
    assert store is not None and store._writer is not None
    handlers = store._writer._handlers
    real = handlers["append_batch"]
    failed_ids: set[str] = set()

    def flaky(conn: Any, runs: list[Any]) -> list[Any]:
        ids = {e.event_id for batch in runs for events, _ in batch.entries for e in events}
        if any(e.payload.get("fail") for b in runs for evs, _ in b.entries for e in evs):
            failed_ids.update(ids)
            raise OSError("disk I/O error (injected)")
        return real(conn, runs)

    handlers["append_batch"] = flaky
    store._writer._one_statement = None  # this test covers the general path (see below)

    outcomes = await publish_with_one_marked_failure(bus)
    handlers["append_batch"] = real
    errored = {eid for eid, exc in outcomes if exc is not None}
    assert errored and errored == failed_ids
    for eid, exc in outcomes:
        assert (store.get_event(eid) is None) == (exc is not None)
    await bus.close()


async def test_recover_redelivers_pipelined_batches_in_publish_order(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    bus = EventBus(store=SQLiteStore(db))

    async def down(event: Event) -> None:
        raise RuntimeError("billing is down")

    bus.on("order.*", down, name="billing", durable=True)

    async def publisher(w: int) -> list[str]:
        return [(await bus.publish("order.paid", {"w": w, "i": i})).event.event_id for i in range(40)]

    per_publisher = await asyncio.gather(*(publisher(w) for w in range(25)))
    await bus.close()

    bus2 = EventBus(store=SQLiteStore(db))
    seen: list[Event] = []

    async def ok(event: Event) -> None:
        seen.append(event)

    bus2.on("order.*", ok, name="billing", durable=True)
    assert await bus2.recover() == 25 * 40
    for w, ids in enumerate(per_publisher):
        assert [e.event_id for e in seen if e.payload["w"] == w] == ids
    await bus2.close()


def test_open_batches_are_kept_per_event_loop(store: SQLiteStore) -> None:
    """Two loops joining batches on one store at the same time: each keeps its own
    open batch, so ``flush()`` on one loop commits that loop's appends made before
    it even while another loop has a batch open."""
    a_joined, b_joined = threading.Event(), threading.Event()
    ev_a, ev_b = Event("order.a", {"n": 1}), Event("order.b", {"n": 2})
    found: list[bool] = []
    errors: list[BaseException] = []

    async def loop_a() -> None:
        batch, _ = store.join_commit(ev_a, ())
        a_joined.set()
        assert b_joined.wait(5)  # blocks this loop on purpose: its batch stays open
        # loop B's batch did not replace it (white-box: flush queues this one first)
        assert store._open_batches.get(asyncio.get_running_loop()) is batch
        await store.flush()
        found.append(store.get_event(ev_a.event_id) is not None)

    async def loop_b() -> None:
        assert a_joined.wait(5)
        batch, _ = store.join_commit(ev_b, ())
        b_joined.set()
        await asyncio.wait_for(asyncio.shield(batch.future), 5)

    def run(main: Any) -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in (loop_a, loop_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert found == [True]
    assert store.get_event(ev_b.event_id) is not None
