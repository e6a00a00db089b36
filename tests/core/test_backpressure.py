"""Exact backpressure: BLOCK, DROP, DROP_OLDEST, RAISE."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from aperion_event_bus import BackpressureError, Event, EventBus


async def _gate_bus(policy: str, limit: int = 5) -> tuple[EventBus, asyncio.Event, list[int]]:
    bus = EventBus(max_pending_events=limit, overflow_policy=policy)
    gate = asyncio.Event()
    seen: list[int] = []

    @bus.on("bp.x")
    async def handler(e: Event) -> None:
        await gate.wait()
        seen.append(e.payload["i"])

    return bus, gate, seen


async def test_exactly_max_pending_accepted_under_burst() -> None:
    bus, gate, seen = await _gate_bus("drop", limit=10)
    async with bus:
        accepted = [bus.publish_nowait("bp.x", {"i": i}) for i in range(100)]
        assert sum(1 for a in accepted if a is not None) == 10
        assert bus.get_pending_count() == 10
        gate.set()
        await bus.drain(2)
        assert seen == list(range(10))
        assert bus.get_stats()["events_dropped"] == 90
        assert bus.get_pending_count() == 0
        # slots are released: the bus accepts again
        assert bus.publish_nowait("bp.x", {"i": 100}) is not None
        await bus.drain(2)


async def test_drop_oldest_really_drops_oldest_queued() -> None:
    bus, gate, seen = await _gate_bus("drop_oldest", limit=3)
    async with bus:
        for i in range(6):
            bus.publish_nowait("bp.x", {"i": i})
            await asyncio.sleep(0)  # let the worker start event 0
        gate.set()
        await bus.drain(2)
    # 0 was already running (not queued); 1 and 2 then 3 were dropped as oldest queued
    assert seen == [0, 4, 5]


async def test_drop_oldest_awaited_publish_reports_drop() -> None:
    bus, gate, seen = await _gate_bus("drop_oldest", limit=2)
    async with bus:
        bus.publish_nowait("bp.x", {"i": 0})
        await asyncio.sleep(0)
        victim = asyncio.create_task(bus.publish("bp.x", {"i": 1}))
        await asyncio.sleep(0)
        bus.publish_nowait("bp.x", {"i": 2})
        result = await asyncio.wait_for(victim, 1)
        assert not result.accepted and "oldest" in (result.dropped_reason or "")
        gate.set()
        await bus.drain(2)
    assert seen == [0, 2]


async def test_raise_policy() -> None:
    bus, gate, _ = await _gate_bus("raise", limit=2)
    async with bus:
        bus.publish_nowait("bp.x", {"i": 0})
        bus.publish_nowait("bp.x", {"i": 1})
        with pytest.raises(BackpressureError, match="max_pending_events=2"):
            bus.publish_nowait("bp.x", {"i": 2})
        with pytest.raises(BackpressureError):
            bus.emit("bp.x", {"i": 3})
        gate.set()


async def test_block_in_async_code_waits_without_blocking_loop() -> None:
    bus, gate, seen = await _gate_bus("block", limit=2)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    async with bus:
        tick = asyncio.create_task(ticker())
        for i in range(2):
            await bus.publish("bp.x", {"i": i}, wait=False)
        blocked = asyncio.create_task(bus.publish("bp.x", {"i": 2}, wait=False))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        assert ticks > 10  # the loop kept running while the publisher waited
        assert bus.get_pending_count() == 2
        with pytest.raises(BackpressureError, match=r"await bus\.publish"):
            bus.publish_nowait("bp.x", {"i": 99})
        with pytest.raises(BackpressureError, match=r"await bus\.publish"):
            bus.emit("bp.x", {"i": 98})
        gate.set()
        result = await asyncio.wait_for(blocked, 1)
        assert result.accepted
        await bus.drain(2)
        tick.cancel()
    assert seen == [0, 1, 2]


async def test_block_cancelled_waiter_does_not_leak_slot() -> None:
    bus, gate, seen = await _gate_bus("block", limit=1)
    async with bus:
        await bus.publish("bp.x", {"i": 0}, wait=False)
        waiter = asyncio.create_task(bus.publish("bp.x", {"i": 1}, wait=False))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.set()
        await bus.drain(2)
        assert bus.get_pending_count() == 0
        await bus.publish("bp.x", {"i": 2})
    assert seen == [0, 2]


def test_block_from_plain_threads() -> None:
    bus = EventBus(max_pending_events=3, overflow_policy="block")
    release = threading.Event()
    seen: list[int] = []
    peak = 0

    def handler(e: Event) -> None:
        nonlocal peak
        peak = max(peak, bus.get_pending_count())
        release.wait(5)
        seen.append(e.payload["i"])

    bus.subscribe(handler, "bp.t")
    done = threading.Event()

    def producer() -> None:
        for i in range(10):
            bus.emit("bp.t", {"i": i})
        done.set()

    th = threading.Thread(target=producer)
    th.start()
    time.sleep(0.1)
    assert not done.is_set() and bus.get_pending_count() == 3
    release.set()
    th.join(5)
    assert done.is_set()
    asyncio.run(bus.wait_for_pending(5))
    assert bus.get_pending_count() == 0
    bus.shutdown(2)
    assert seen == list(range(10)) and peak <= 3


def test_wait_for_handlers_bypasses_backpressure() -> None:
    bus = EventBus(max_pending_events=1, overflow_policy="raise")
    gate = threading.Event()
    seen: list[str] = []
    bus.subscribe(lambda e: gate.wait(2), "slow.x")
    bus.subscribe(lambda e: seen.append("ran"), "fast.x")
    bus.emit("slow.x", {})
    bus.emit("fast.x", {}, wait_for_handlers=True)
    gate.set()
    bus.shutdown(2)
    assert seen == ["ran"]
