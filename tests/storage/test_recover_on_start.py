"""Redelivery on start (``_start_recovery``): a durable subscription's unacknowledged
deliveries reach it without a ``recover()`` call, before any event published after
its start, exactly once; ``recover()`` waits for them instead of queueing them again;
``recover_on_start=False`` leaves them to ``recover()``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

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
