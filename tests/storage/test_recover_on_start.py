"""Redelivery on start (``_start_recovery``): a durable subscription's unacknowledged
deliveries reach it without a ``recover()`` call, before any event published after
its start, exactly once; ``recover()`` waits for them instead of queueing them again;
``recover_on_start=False`` leaves them to ``recover()``."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aperion_event_bus import Event, EventBus, delivery_attempt


async def _leave_pending(db: Path, count: int) -> list[str]:
    """``count`` events whose "billing" delivery failed: pending in the store."""
    bus = EventBus(store=f"sqlite:///{db}")

    async def fails(event: Event) -> None:
        raise RuntimeError("down")

    bus.on("order.*", fails, name="billing", durable=True)
    ids = [(await bus.publish("order.paid", {"n": n})).event.event_id for n in range(count)]
    await bus.close()
    return ids


async def test_pending_deliveries_come_first_without_recover(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    old = await _leave_pending(db, 3)
    bus = EventBus(store=f"sqlite:///{db}")
    seen: list[tuple[str, int]] = []

    @bus.on("order.*", name="billing", durable=True)
    async def bill(event: Event) -> None:
        seen.append((event.event_id, delivery_attempt()))

    new = (await bus.publish("order.paid", {"n": 99})).event.event_id
    await bus.drain(5)
    assert seen == [(old[0], 2), (old[1], 2), (old[2], 2), (new, 1)]
    assert await bus.recover() == 3  # reports the redeliveries on start, queues nothing
    assert await bus.recover() == 0  # all acknowledged: nothing twice
    assert len(seen) == 4
    await bus.close()


async def test_recover_waits_for_the_redeliveries_on_start(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    old = await _leave_pending(db, 5)
    bus = EventBus(store=f"sqlite:///{db}")
    release = asyncio.Event()
    seen: list[str] = []

    @bus.on("order.*", name="billing", durable=True)
    async def bill(event: Event) -> None:
        await release.wait()
        seen.append(event.event_id)

    recovering = asyncio.ensure_future(bus.recover())  # binds the bus: the start
    await asyncio.sleep(0.05)
    assert not recovering.done()
    release.set()
    assert await recovering == 5
    assert seen == old  # once each, in publish order
    await bus.close()


async def test_a_name_subscribed_later_starts_when_subscribed(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    old = await _leave_pending(db, 2)
    bus = EventBus(store=f"sqlite:///{db}")
    await bus.publish("user.created", {})  # the bus is running now
    seen: list[str] = []

    @bus.on("order.*", name="billing", durable=True)
    async def bill(event: Event) -> None:
        seen.append(event.event_id)

    new = (await bus.publish("order.paid", {"n": 7})).event.event_id
    await bus.drain(5)
    assert seen == [*old, new]
    await bus.close()


def test_sync_code_gets_the_redeliveries_before_its_first_emit(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    old = asyncio.run(_leave_pending(db, 2))
    bus = EventBus(store=f"sqlite:///{db}")
    seen: list[tuple[str, str]] = []

    def bill(event: Event) -> None:
        seen.append((event.event_id, threading.current_thread().name))

    bus.on("order.*", bill, name="billing", durable=True)
    new = bus.emit("order.paid", {"n": 1})  # binds the bus's own loop thread: the start
    assert bus.recover_sync(timeout=5) == 2  # waits for the redeliveries on start
    bus.shutdown()  # finishes the new event
    assert [event_id for event_id, _ in seen] == [*old, new]
    assert all(thread != threading.current_thread().name for _, thread in seen)


async def test_recover_on_start_false_leaves_them_to_recover(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    old = await _leave_pending(db, 2)
    bus = EventBus(store=f"sqlite:///{db}", recover_on_start=False)
    seen: list[str] = []

    @bus.on("order.*", name="billing", durable=True)
    async def bill(event: Event) -> None:
        seen.append(event.event_id)

    new = (await bus.publish("order.paid", {"n": 1})).event.event_id
    assert seen == [new]
    assert await bus.recover() == 2
    assert seen == [new, *old]
    await bus.close()


def test_a_publish_racing_the_start_read_is_delivered_once(tmp_path: Path) -> None:
    """Another thread publishing while the bus starts waits until the start has read
    and queued what is pending: its event is not among the redeliveries too."""
    bus = EventBus(store=f"sqlite:///{tmp_path / 'e.db'}")
    seen: collections.Counter[int] = collections.Counter()

    def work(event: Event) -> None:
        seen[event.payload["n"]] += 1
        time.sleep(0.5)  # still unacknowledged when a late start read would run

    bus.subscribe(work, "job.*", name="worker", durable=True)
    store = bus.store
    assert store is not None
    read = store.pending_deliveries

    def slow_read(name: str, limit: int | None = None) -> Any:
        time.sleep(0.3)  # a start read that takes a while (a backlog, a slow disk)
        return read(name, limit)

    store.pending_deliveries = slow_read  # type: ignore[method-assign]
    first = threading.Thread(target=lambda: bus.publish_nowait("job.a", {"n": 1}))
    first.start()
    time.sleep(0.05)  # the first publish is starting the bus
    second = threading.Thread(target=lambda: bus.publish_nowait("job.a", {"n": 2}))
    second.start()
    first.join()
    second.join()
    bus.shutdown(5)
    assert seen == {1: 1, 2: 1}


async def test_a_subscription_added_while_publishing_gets_no_event_twice(tmp_path: Path) -> None:
    bus = EventBus(store=f"sqlite:///{tmp_path / 'e.db'}")
    await bus.publish("x.started", {})  # the bus is running
    store = bus.store
    assert store is not None
    read = store.pending_deliveries
    published: list[str] = []

    def read_while_publishing(name: str, limit: int | None = None) -> Any:
        # a publish from another thread while the new subscription reads its backlog
        thread = threading.Thread(
            target=lambda: published.append(bus.publish_nowait("job.a", {}).event_id)  # type: ignore[union-attr]
        )
        thread.start()
        thread.join(0.3)
        return read(name, limit)

    store.pending_deliveries = read_while_publishing  # type: ignore[method-assign]
    seen: list[str] = []

    async def work(event: Event) -> None:
        seen.append(event.event_id)

    bus.on("job.*", work, name="worker", durable=True)
    store.pending_deliveries = read  # type: ignore[method-assign]
    await asyncio.sleep(0.3)
    late = (await bus.publish("job.b", {})).event.event_id
    await bus.drain(5)
    assert len(seen) == len(set(seen))  # nothing twice
    assert seen[-1] == late
    await bus.close()


def test_redeliveries_lost_with_a_closed_loop_start_again_on_the_next(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    old = asyncio.run(_leave_pending(db, 3))
    bus = EventBus(store=f"sqlite:///{db}")
    seen: list[str] = []

    async def bill(event: Event) -> None:
        await asyncio.sleep(0.2)
        seen.append(event.event_id)

    bus.on("order.*", bill, name="billing", durable=True)

    async def start_and_leave() -> None:  # the loop ends before the redeliveries ran
        await bus.publish("user.created", {})

    asyncio.run(start_and_leave())

    async def again() -> int:
        count = await asyncio.wait_for(bus.recover(), 5)
        await bus.close()
        return count

    assert asyncio.run(again()) == 3
    assert seen[-3:] == old


async def test_a_failing_start_read_leaves_the_subscription_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from aperion_event_bus.storage import StoreError

    db = tmp_path / "e.db"
    old = await _leave_pending(db, 1)
    bus = EventBus(store=f"sqlite:///{db}")
    await bus.publish("x.started", {})
    store = bus.store
    assert store is not None
    read = store.pending_deliveries

    def broken(name: str, limit: int | None = None) -> Any:
        raise StoreError("disk I/O error")

    store.pending_deliveries = broken  # type: ignore[method-assign]
    seen: list[str] = []

    async def bill(event: Event) -> None:
        seen.append(event.event_id)

    bus.on("order.*", bill, name="billing", durable=True)  # logs, does not raise
    assert "could not read the pending deliveries" in caplog.text
    store.pending_deliveries = read  # type: ignore[method-assign]
    new = (await bus.publish("order.paid", {})).event.event_id
    assert seen == [new]
    assert await bus.recover() == 1  # the backlog, once the store reads again
    assert seen == [new, *old]
    await bus.close()
