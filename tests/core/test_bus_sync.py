"""1.x sync surface: emit, wait_for_handlers, stats, shutdown, threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict

import pytest

from aperion_event_bus import (
    CorrelationContext,
    Event,
    EventBus,
    EventBusError,
    OverflowPolicy,
    get_correlation_id,
)


def test_emit_wait_for_handlers_runs_all_in_priority_order(sync_bus: EventBus) -> None:
    order: list[str] = []
    sync_bus.subscribe(lambda e: order.append("low"), "a.b", priority=1)
    sync_bus.subscribe(lambda e: order.append("high"), "a.*", priority=50)

    async def mid(e: Event) -> None:
        await asyncio.sleep(0.01)
        order.append("mid-async")

    sync_bus.subscribe(mid, ["a.b"], priority=10)
    event_id = sync_bus.emit("a.b", {"x": 1}, wait_for_handlers=True)
    assert event_id.startswith("evt_")
    assert order == ["high", "mid-async", "low"]


def test_emit_fire_and_forget_then_wait_for_pending(sync_bus: EventBus) -> None:
    got: list[int] = []
    sync_bus.subscribe(lambda e: got.append(e.payload["i"]), "a.b")
    for i in range(500):
        sync_bus.emit("a.b", {"i": i})
    finished = asyncio.run(sync_bus.wait_for_pending(5))  # 1.x: how many finished meanwhile
    assert 0 <= finished <= 500 and sync_bus.get_pending_count() == 0
    assert got == list(range(500))


def test_correlation_falls_back_to_context_and_reaches_threads(sync_bus: EventBus) -> None:
    seen: list[str | None] = []
    done = threading.Event()

    def handler(e: Event) -> None:
        seen.append(get_correlation_id())
        done.set()

    sync_bus.subscribe(handler, "a.b")
    with CorrelationContext("cid-7"):
        sync_bus.emit("a.b", {})
    assert done.wait(2)
    assert seen == ["cid-7"]


def test_ten_thousand_events_from_four_threads_keep_per_thread_order() -> None:
    bus = EventBus(max_workers=4)
    per_sub: list[dict[int, list[int]]] = [defaultdict(list), defaultdict(list)]

    def make(index: int):
        def handler(e: Event) -> None:
            per_sub[index][e.payload["t"]].append(e.payload["i"])

        return handler

    bus.subscribe(make(0), "load.x")

    async def async_handler(e: Event) -> None:
        per_sub[1][e.payload["t"]].append(e.payload["i"])

    bus.subscribe(async_handler, "load.*", priority=5)

    def publisher(t: int) -> None:
        for i in range(2500):
            bus.emit("load.x", {"t": t, "i": i})

    threads = [threading.Thread(target=publisher, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    asyncio.run(bus.wait_for_pending(20))
    assert bus.get_pending_count() == 0
    bus.shutdown(5)
    for seen in per_sub:
        assert sorted(seen) == [0, 1, 2, 3]
        for t in range(4):
            assert seen[t] == list(range(2500))


def test_get_stats_has_1x_keys(sync_bus: EventBus) -> None:
    sync_bus.subscribe(lambda e: None, ["a.b", "c.*"])
    stats = sync_bus.get_stats()
    for key in [
        "active_subscriptions",
        "total_subscriptions",
        "audit_enabled",
        "max_concurrent_handlers",
        "validation_enabled",
        "metrics_enabled",
        "dlq_enabled",
        "event_types_subscribed",
        "pending_async_tasks",
        "pending_events",
        "max_pending_events",
        "overflow_policy",
        "total_events_logged",
        "log_file_size",
    ]:
        assert key in stats, key
    assert stats["event_types_subscribed"] == ["a.b", "c.*"]
    assert stats["overflow_policy"] is None


def test_constructor_1x_options() -> None:
    bus = EventBus(max_concurrent_handlers=3, max_workers=7, overflow_policy="drop_oldest", max_pending_events=5)
    assert bus.executor._max_workers == 7  # max_workers wins
    assert bus.overflow_policy is OverflowPolicy.DROP_OLDEST
    assert bus.get_stats()["overflow_policy"] == "drop_oldest"
    with pytest.raises(ValueError, match="overflow_policy"):
        EventBus(overflow_policy="sometimes")
    bus.shutdown(1)


def test_shutdown_honours_timeout() -> None:
    bus = EventBus()
    release = threading.Event()
    bus.subscribe(lambda e: release.wait(10), "slow.x")
    bus.emit("slow.x", {})
    time.sleep(0.05)
    t0 = time.perf_counter()
    bus.shutdown(timeout=0.2)
    elapsed = time.perf_counter() - t0
    release.set()
    assert elapsed < 2.0


def test_emit_wait_on_loop_thread_raises_clear_error() -> None:
    async def main() -> None:
        async with EventBus() as bus:
            bus.subscribe(lambda e: None, "a.b")
            with pytest.raises(EventBusError, match=r"await bus\.publish"):
                bus.emit("a.b", {}, wait_for_handlers=True)

    asyncio.run(main())


def test_sync_handler_timeout_inline_is_reported(sync_bus: EventBus) -> None:
    reports: list[Event] = []
    sync_bus.on("t.x", lambda e: time.sleep(0.1), timeout=0.02)
    sync_bus.on("system.handler_error", reports.append)
    sync_bus.emit("t.x", {}, wait_for_handlers=True)
    asyncio.run(sync_bus.wait_for_pending(2))
    assert sync_bus.get_pending_count() == 0
    deadline = time.time() + 2
    while not reports and time.time() < deadline:
        time.sleep(0.01)
    assert reports and reports[0].payload["timed_out"] is True


def test_with_statement_shuts_down() -> None:
    with EventBus() as bus:
        got: list[str] = []
        bus.subscribe(lambda e: got.append(e.event_id), "a.b")
        bus.emit("a.b", {})
    assert len(got) == 1  # shutdown drained it


def test_bus_reused_across_event_loops() -> None:
    bus = EventBus()
    got: list[int] = []

    async def handler(e: Event) -> None:
        got.append(e.payload["n"])

    bus.subscribe(handler, "r.x")

    async def run(n: int) -> None:
        await bus.publish("r.x", {"n": n})

    asyncio.run(run(1))
    asyncio.run(run(2))  # first loop is closed: the bus rebinds
    bus.emit("r.x", {"n": 3}, wait_for_handlers=True)
    bus.shutdown(2)
    assert got == [1, 2, 3]


def test_sync_handler_returning_a_coroutine_runs_once_inline(sync_bus: EventBus) -> None:
    calls: list[str] = []

    async def later(e: Event) -> None:
        calls.append("awaited")

    def returns_coroutine(e: Event):  # a sync callable that returns an awaitable
        calls.append("called")
        return later(e)

    sync_bus.subscribe(returns_coroutine, "co.x")
    sync_bus.emit("co.x", {}, wait_for_handlers=True)
    assert calls == ["called", "awaited"]
