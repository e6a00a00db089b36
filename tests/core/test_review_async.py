"""Review tests for the async side of the engine (dispatch.py / bus.py / _driver.py).

Each test either reproduces a defect found in an adversarial review (fixed since;
the test keeps it fixed) or pins a property worth keeping: races, leaked slots,
ordering, context, cancellation, shutdown.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import itertools
import random
import sys
import threading
from typing import Any

import pytest

from aperion_event_bus import (
    BusClosedError,
    Event,
    EventBus,
    current_event,
    get_correlation_id,
)
from aperion_event_bus import dispatch as dispatch_mod

pytestmark = pytest.mark.timeout(30)

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("review_request_var", default="-")


class Fatal(BaseException):
    """A BaseException that is not KeyboardInterrupt/SystemExit (asyncio does not re-raise it)."""


async def _wait_until(predicate: Any, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


def _live_lane_tasks(suffix: str) -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith("aperion-lane:")
        and t.get_name().endswith(suffix)
        and not t.done()
    ]


# =====================================================================================
# Bugs
# =====================================================================================


async def test_direct_publish_does_not_overlap_a_busy_lane() -> None:
    """The direct path reserves every lane of its event up front: an event published
    later for one of those lanes waits for it (FIFO) instead of overlapping it."""
    running = 0
    peak = 0
    order: list[str] = []
    a_started = asyncio.Event()
    gate_a = asyncio.Event()
    bus = EventBus(handler_timeout=5)
    try:

        @bus.on("x.one", priority=10)
        async def a(e: Event) -> None:
            a_started.set()
            await gate_a.wait()

        @bus.on(["x.one", "x.two"], priority=0)
        async def b(e: Event) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            order.append(e.event_type)
            await asyncio.sleep(0.01)
            running -= 1

        first = asyncio.create_task(bus.publish("x.one", {}))  # all lanes idle: direct path
        await asyncio.wait_for(a_started.wait(), 2)
        bus.publish_nowait("x.two", {})  # b is reserved by x.one: x.two queues behind it
        await asyncio.sleep(0.02)
        assert order == []  # x.two did not overtake x.one on b
        gate_a.set()
        await asyncio.wait_for(first, 2)
        assert await bus.drain(2)
    finally:
        gate_a.set()
        await bus.close(1)
    assert peak == 1, "subscription without concurrency ran two deliveries at once"
    assert order == ["x.one", "x.two"]


async def test_parallel_handlers_overlap_on_awaited_publish() -> None:
    running = 0
    peak = 0
    bus = EventBus(parallel_handlers=True, handler_timeout=5)
    try:
        for _ in range(3):

            async def h(e: Event) -> None:
                nonlocal running, peak
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.02)
                running -= 1

            bus.on("p.y", h)
        result = await bus.publish("p.y", {})
        assert result.ok and len(result.handler_results) == 3
    finally:
        await bus.close(1)
    assert peak == 3


async def test_base_exception_from_lane_handler_is_contained() -> None:
    seen: list[int] = []
    bus = EventBus(handler_timeout=2)
    try:

        @bus.on("f.x")
        async def h(e: Event) -> None:
            seen.append(e.payload["n"])
            if e.payload["n"] == 0:
                raise Fatal("boom")

        for n in range(3):
            bus.publish_nowait("f.x", {"n": n})
        drained = await bus.drain(0.3)
        assert drained and bus.get_pending_count() == 0
        assert seen == [0, 1, 2]
    finally:
        await bus.close(0.1)
        gc.collect()  # finalise dead lane workers here, not while pytest formats the failure


async def test_base_exception_on_direct_path_does_not_leak_slot() -> None:
    bus = EventBus(handler_timeout=2)
    try:

        @bus.on("f.y")
        async def h(e: Event) -> None:
            raise Fatal("boom")

        result = await bus.publish("f.y", {})  # contained: reported as the handler's failure
        assert isinstance(result.errors[0], Fatal)
        assert await bus.drain(0.3)
        assert bus.get_pending_count() == 0
    finally:
        await bus.close(0.1)
        gc.collect()  # finalise dead lane workers here, not while pytest formats the failure


async def test_sync_handler_raising_cancelled_error_is_a_handler_failure() -> None:
    seen: list[int] = []
    bus = EventBus(handler_timeout=2)
    try:

        def h(e: Event) -> None:
            seen.append(e.payload["n"])
            if e.payload["n"] == 0:
                raise asyncio.CancelledError()

        bus.on("f.z", h)
        for n in range(3):
            bus.publish_nowait("f.z", {"n": n})
        assert await bus.drain(0.3)
        assert seen == [0, 1, 2]
    finally:
        await bus.close(0.1)
        gc.collect()  # finalise dead lane workers here, not while pytest formats the failure


async def test_handler_cancelling_its_task_does_not_kill_the_lane() -> None:
    seen: list[int] = []
    bus = EventBus(handler_timeout=2)
    try:

        @bus.on("f.c")
        async def h(e: Event) -> None:
            seen.append(e.payload["n"])
            if e.payload["n"] == 0:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()  # e.g. a library aborting "its" task
                await asyncio.sleep(0)

        for n in range(3):
            bus.publish_nowait("f.c", {"n": n})
        assert await bus.drain(0.3)
        assert seen == [0, 1, 2]
    finally:
        await bus.close(0.1)
        gc.collect()  # finalise dead lane workers here, not while pytest formats the failure


async def test_awaited_child_publish_with_catch_all_subscriber_does_not_deadlock() -> None:
    audit: list[str] = []
    child_ok: list[bool] = []
    bus = EventBus(handler_timeout=0.3)
    try:

        @bus.on("*", priority=0)
        async def audit_all(e: Event) -> None:
            audit.append(e.event_type)

        @bus.on("order.created", priority=10)
        async def validate(e: Event) -> None:
            result = await bus.publish("order.validated", {"id": e.payload["id"]})
            child_ok.append(result.ok)

        bus.publish_nowait("order.created", {"id": 1})  # goes through the lanes
        assert await bus.drain(2)
        stats = bus.get_stats()
    finally:
        await bus.close(1)
    assert stats["handler_timeouts"] == 0, "validate() was stuck until its timeout"
    assert child_ok == [True]
    assert sorted(audit) == ["order.created", "order.validated"]


async def test_recursive_awaited_publish_same_subscription() -> None:
    depths: list[int] = []
    bus = EventBus(handler_timeout=0.3)
    try:

        @bus.on("tree.node")
        async def node(e: Event) -> None:
            depth = e.payload["depth"]
            depths.append(depth)
            if depth < 2:
                (await bus.publish("tree.node", {"depth": depth + 1})).raise_for_errors()

        result = await asyncio.wait_for(bus.publish("tree.node", {"depth": 0}), 3)
        await bus.drain(2)
    finally:
        await bus.close(1)
    assert result.ok, result.errors
    assert depths == [0, 1, 2]


async def test_publisher_timeout_cancels_direct_handler_without_reporting_failure() -> None:
    """Documented: on the direct path the handler runs in the publisher's task, so
    cancelling the publish cancels the running handler. That is logged as a warning,
    not reported as a handler failure, and the remaining handlers still run."""
    finished: list[str] = []
    errors: list[str] = []
    bus = EventBus(handler_timeout=2)
    try:

        @bus.on("slow.x", priority=10)
        async def h(e: Event) -> None:
            await asyncio.sleep(0.1)
            finished.append("first")

        @bus.on("slow.x", priority=1)
        async def after(e: Event) -> None:
            finished.append("second")

        @bus.on("system.handler_error")
        def err(e: Event) -> None:
            errors.append(e.payload["error_type"])

        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await bus.publish("slow.x", {})
        assert await bus.drain(2)
    finally:
        await bus.close(1)
    assert errors == []
    assert finished == ["second"]


async def test_sync_handler_returning_coroutine_keeps_context() -> None:
    got: list[tuple[str | None, str | None, str]] = []
    bus = EventBus(handler_timeout=2)
    try:

        async def later(e: Event) -> str:
            ev = current_event()
            got.append((get_correlation_id(), ev.event_id if ev else None, request_var.get()))
            return "done"

        bus.on("ctx.x", lambda e: later(e))  # a sync callable returning an awaitable
        request_var.set("req-42")
        result = await bus.publish("ctx.x", {}, correlation_id="cid-7")
    finally:
        await bus.close(1)
    assert result.values == ["done"]
    assert got == [("cid-7", result.event_id, "req-42")]


async def test_close_with_timeout_releases_awaiting_publishers() -> None:
    gate = asyncio.Event()
    started = asyncio.Event()
    bus = EventBus(handler_timeout=None)

    @bus.on("c.x")
    async def h(e: Event) -> None:
        started.set()
        await gate.wait()

    bus.publish_nowait("c.x", {})
    await asyncio.wait_for(started.wait(), 2)
    waiter = asyncio.create_task(bus.publish("c.x", {}))  # queued behind the stuck handler
    await asyncio.sleep(0.01)
    try:
        assert await bus.close(timeout=0.1) is False
        done, _ = await asyncio.wait({waiter}, timeout=0.3)
        assert waiter in done, "publisher still waiting after the bus closed"
        result = waiter.result()
        assert not result.accepted
        assert result.dropped_reason == "the bus closed before the event was handled"
    finally:
        waiter.cancel()
        gate.set()


async def test_close_releases_publishers_blocked_under_block() -> None:
    gate = asyncio.Event()
    started = asyncio.Event()
    bus = EventBus(max_pending_events=1, overflow_policy="block", handler_timeout=None)

    @bus.on("c.b")
    async def h(e: Event) -> None:
        started.set()
        await gate.wait()

    await bus.publish("c.b", {}, wait=False)
    await asyncio.wait_for(started.wait(), 2)
    blocked = asyncio.create_task(bus.publish("c.b", {}, wait=False))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    try:
        assert await bus.close(timeout=0.1) is False
        done, _ = await asyncio.wait({blocked}, timeout=0.3)
        assert blocked in done, "BLOCK publisher still waiting after close()"
        with pytest.raises(BusClosedError):
            blocked.result()
    finally:
        blocked.cancel()
        gate.set()


async def test_drop_oldest_does_not_retain_finished_events() -> None:
    bus = EventBus(max_pending_events=10, overflow_policy="drop_oldest")
    try:

        @bus.on("m.x")
        async def h(e: Event) -> None:
            return None

        for i in range(2000):
            await bus.publish("m.x", {"i": i})
        gc.collect()
        blocks_before = sys.getallocatedblocks()  # also counts events the GC does not track
        for i in range(2000):
            bus.publish_nowait("m.x", {"i": i})
            if i % 5 == 0:
                await bus.drain(1)
        await bus.drain(1)
    finally:
        pass
    gc.collect()
    retained = sum(1 for o in gc.get_objects() if type(o) is Event and o.event_type == "m.x")
    grown = sys.getallocatedblocks() - blocks_before
    await bus.close(1)
    assert retained < 100, f"{retained} finished events are still referenced"
    assert grown < 400, f"{grown} more memory blocks after 2000 finished events"


async def test_drop_oldest_drops_batched_but_unstarted_event() -> None:
    gate = threading.Event()
    seen: list[int] = []
    bus = EventBus(max_pending_events=3, overflow_policy="drop_oldest", handler_timeout=5)
    try:

        def h(e: Event) -> None:
            if e.payload["n"] == 0:
                gate.wait(2)
            seen.append(e.payload["n"])

        bus.on("dob.x", h)
        for n in range(3):
            bus.publish_nowait("dob.x", {"n": n})
        await asyncio.sleep(0.05)  # the lane claimed [0, 1, 2] as one batch; only 0 runs
        newest = bus.publish_nowait("dob.x", {"n": 3})
        gate.set()
        assert await bus.drain(2)
    finally:
        gate.set()
        await bus.close(0.5)
    assert newest is not None, "the newest event was dropped although 1 and 2 had not started"
    assert seen == [0, 2, 3]


async def test_drop_oldest_from_other_thread_races_direct_path() -> None:
    seen: list[int] = []
    bus = EventBus(max_pending_events=1, overflow_policy="drop_oldest", handler_timeout=2)
    try:

        @bus.on("r.x")
        async def h(e: Event) -> None:
            seen.append(e.payload["n"])

        await bus.publish("r.x", {"n": 0})  # bind and open the lane
        d = bus._dispatcher
        original = d.lanes_idle
        fired = False

        def lanes_idle(subs: Any) -> bool:
            # Another thread publishes after this publisher saw idle lanes and before
            # run_direct marks the chain STARTED (a thread switch can happen here).
            nonlocal fired
            idle = original(subs)
            if not fired:
                fired = True
                t = threading.Thread(target=bus.publish_nowait, args=("r.x", {"n": 2}))
                t.start()
                t.join()
            return idle

        d.lanes_idle = lanes_idle  # type: ignore[method-assign]
        result = await bus.publish("r.x", {"n": 1})
        await _wait_until(lambda: 2 in seen)  # the other thread's event ran too
        assert await bus.drain(0.3), f"pending stuck at {bus.get_pending_count()}"
        assert bus.get_pending_count() == 0
        # n=1 was either dropped (and not delivered) or delivered (and not dropped)
        delivered_1 = 1 in seen
        assert delivered_1 == result.accepted
        assert delivered_1 != (bus.get_stats()["events_dropped"] == 1)
    finally:
        await bus.close(0.1)
        gc.collect()  # finalise dead lane workers here, not while pytest formats the failure


async def test_block_cancel_racing_grant_from_other_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()
    bus = EventBus(max_pending_events=1, overflow_policy="block", handler_timeout=5)

    @bus.on("b.r")
    async def h(e: Event) -> None:
        started.set()
        if e.payload.get("hold"):
            await gate.wait()

    await bus.publish("b.r", {"hold": True}, wait=False)
    await asyncio.wait_for(started.wait(), 2)

    outcome: list[str] = []
    pub_loop: list[asyncio.AbstractEventLoop] = []
    pub_task: list[asyncio.Task[Any]] = []
    finished = threading.Event()

    def publisher_thread() -> None:
        async def pub() -> None:
            pub_task.append(asyncio.current_task())  # type: ignore[arg-type]
            try:
                await bus.publish("b.r", {}, wait=False)
                outcome.append("ok")
            except asyncio.CancelledError:
                outcome.append("cancelled")
            except BaseException as exc:
                outcome.append(repr(exc))
            finally:
                finished.set()

        loop = asyncio.new_event_loop()
        pub_loop.append(loop)
        try:
            loop.run_until_complete(pub())
        finally:
            loop.close()

    thread = threading.Thread(target=publisher_thread, daemon=True)
    thread.start()
    d = bus._dispatcher
    await _wait_until(lambda: len(d._blocked) == 1)

    original_grant = dispatch_mod._Waiter.grant

    def grant(self: Any, on_loop: Any) -> None:
        # release() popped the waiter; the waiting publisher is cancelled right now
        pub_loop[0].call_soon_threadsafe(pub_task[0].cancel)
        finished.wait(2)
        original_grant(self, on_loop)

    monkeypatch.setattr(dispatch_mod._Waiter, "grant", grant)
    try:
        gate.set()
        await asyncio.to_thread(thread.join, 2)
        assert outcome == ["cancelled"]
        assert await bus.drain(0.3), f"pending stuck at {bus.get_pending_count()}"
    finally:
        monkeypatch.undo()
        await bus.close(0.1)


async def test_sync_handler_unsubscribing_itself_gets_no_more_events() -> None:
    calls: list[int] = []
    bus = EventBus(handler_timeout=5)
    try:

        def h(e: Event) -> None:
            calls.append(e.payload["n"])
            if e.payload["n"] == 1:
                bus.unsubscribe(sub_id)

        sub_id = bus.subscribe(h, "u.s")
        for n in range(20):
            bus.publish_nowait("u.s", {"n": n})
        assert await bus.drain(2)
    finally:
        await bus.close(1)
    assert calls == [0, 1]  # the async lane honours this (see the passing test below)


async def test_unsubscribed_mid_dispatch_leaves_no_lane_worker() -> None:
    b_calls: list[int] = []
    bus = EventBus(handler_timeout=5)
    try:

        async def lower(e: Event) -> None:
            b_calls.append(1)

        sub_b = bus.on("q.x", lower, priority=0)

        @bus.on("q.x", priority=10)
        async def upper(e: Event) -> None:
            bus.off(sub_b)

        await bus.publish("q.x", {})
        assert await bus.drain(1)
        for _ in range(5):
            await asyncio.sleep(0)
        leaked = _live_lane_tasks(".lower")
        assert b_calls == []
        assert leaked == [], f"{len(leaked)} lane worker(s) of an unsubscribed handler still alive"
    finally:
        await bus.close(1)


# =====================================================================================
# Properties that hold (keep them)
# =====================================================================================


async def test_asyncio_timeout_taskgroup_and_current_task_inside_handlers() -> None:
    notes: list[Any] = []
    async with EventBus(handler_timeout=2) as bus:

        @bus.on("h.timeout")
        async def uses_timeout(e: Event) -> str:
            assert asyncio.current_task() is not None
            try:
                async with asyncio.timeout(0.01):
                    await asyncio.sleep(1)
            except TimeoutError:
                return "inner-timeout"
            return "no"

        @bus.on("h.group")
        async def uses_taskgroup(e: Event) -> list[str | None]:
            async def child() -> str | None:
                await asyncio.sleep(0)
                return get_correlation_id()

            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(child()) for _ in range(3)]
            return [t.result() for t in tasks]

        @bus.on("h.groupfail")
        async def group_fails(e: Event) -> None:
            async def bad() -> None:
                raise ValueError("child failed")

            async def slow() -> None:
                await asyncio.sleep(5)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(slow())
                tg.create_task(bad())

        # direct path (idle lanes) and lane path (fire and forget) both
        r1 = await bus.publish("h.timeout", {})
        r2 = await bus.publish("h.group", {}, correlation_id="cg-1")
        r3 = await bus.publish("h.groupfail", {})
        assert r1.values == ["inner-timeout"] and not r1.timed_out
        assert r2.values == [["cg-1"] * 3]
        assert len(r3.errors) == 1 and isinstance(r3.errors[0], ExceptionGroup)
        assert not r3.timed_out

        @bus.on("h.lane")
        async def lane_timeout(e: Event) -> None:
            try:
                async with asyncio.timeout(0.01):
                    await asyncio.sleep(1)
            except TimeoutError:
                notes.append("lane-inner-timeout")

        for _ in range(3):
            bus.publish_nowait("h.lane", {})
        assert await bus.drain(2)
        assert bus.get_stats()["handler_timeouts"] == 0
    assert notes == ["lane-inner-timeout"] * 3


async def test_async_handler_raising_cancelled_error_direct_path_is_a_failure() -> None:
    async with EventBus(handler_timeout=2) as bus:

        @bus.on("ce.x")
        async def h(e: Event) -> None:
            raise asyncio.CancelledError()

        r = await bus.publish("ce.x", {})
        assert not r.ok and isinstance(r.errors[0], asyncio.CancelledError)
        assert bus.get_pending_count() == 0


async def test_async_handler_raising_cancelled_error_on_lane_is_a_failure() -> None:
    seen: list[int] = []
    bus = EventBus(handler_timeout=2)
    try:

        @bus.on("ce.y")
        async def h(e: Event) -> None:
            seen.append(e.payload["n"])
            if e.payload["n"] == 0:
                raise asyncio.CancelledError()

        for n in range(3):
            bus.publish_nowait("ce.y", {"n": n})
        assert await bus.drain(0.3)
        assert seen == [0, 1, 2]
    finally:
        await bus.close(0.1)
        gc.collect()  # finalise dead lane workers here, not while pytest formats the failure


async def test_sync_timeout_mid_batch_rest_delivered_in_order() -> None:
    seen: list[int] = []
    release = threading.Event()
    async with EventBus(handler_timeout=0.2) as bus:

        def h(e: Event) -> int:
            n = e.payload["n"]
            seen.append(n)
            if n == 3:
                release.wait(2)  # stuck: abandoned after 0.2 s
            return n

        bus.on("sb.x", h)
        results: list[Any] = []
        for n in range(10):
            bus.publish_nowait("sb.x", {"n": n})
        waiter = asyncio.create_task(bus.publish("sb.x", {"n": 10}))
        assert await bus.drain(3)
        results.append(await waiter)
        stats = bus.get_stats()
        release.set()
    assert seen == list(range(11))
    assert stats["handler_timeouts"] == 1
    assert results[0].values == [10]


async def test_unsubscribe_while_queued_pending_reaches_zero() -> None:
    calls: list[int] = []
    async with EventBus(handler_timeout=2) as bus:

        async def h(e: Event) -> None:
            calls.append(e.payload["n"])
            if e.payload["n"] == 1:
                bus.unsubscribe(sub.subscription_id)

        sub = bus.on("uq.x", h)

        def sync_h(e: Event) -> None:
            pass

        sync_sub = bus.on("uq.x", sync_h, priority=-1)
        for n in range(50):
            bus.publish_nowait("uq.x", {"n": n})
        bus.off(sync_sub)
        assert await bus.drain(2)
        assert bus.get_pending_count() == 0
    assert calls == [0, 1]


async def test_weak_bound_method_collected_while_events_queued() -> None:
    class Listener:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_event(self, e: Event) -> None:
            self.seen.append(e.payload["n"])

        async def on_event_async(self, e: Event) -> None:
            self.seen.append(e.payload["n"])

    async with EventBus(handler_timeout=2) as bus:
        listener = Listener()
        bus.on("wk.x", listener.on_event)
        bus.on("wk.x", listener.on_event_async, priority=1)
        for n in range(100):
            bus.publish_nowait("wk.x", {"n": n})
        assert bus.get_pending_count() == 100
        del listener
        gc.collect()
        assert await bus.drain(2)
        assert bus.get_pending_count() == 0
        assert bus.get_subscriptions() == []


async def test_block_many_publishers_with_cancellation_keeps_exact_accounting() -> None:
    rng = random.Random(7)
    limit = 3
    running = 0
    peak = 0
    delivered = 0
    async with EventBus(
        max_pending_events=limit, overflow_policy="block", handler_timeout=2
    ) as bus:

        @bus.on("bm.x")
        async def h(e: Event) -> None:
            nonlocal running, peak, delivered
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(rng.choice([0, 0, 0.001]))
            running -= 1
            delivered += 1

        max_pending_seen = 0

        async def watch() -> None:
            nonlocal max_pending_seen
            while True:
                max_pending_seen = max(max_pending_seen, bus.get_pending_count())
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        tasks = [
            asyncio.create_task(bus.publish("bm.x", {"i": i}, wait=rng.random() < 0.5))
            for i in range(300)
        ]
        for _ in range(60):
            await asyncio.sleep(0)
            rng.choice(tasks).cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert await bus.drain(3)
        watcher.cancel()
        assert bus.get_pending_count() == 0
        unexpected = [
            o
            for o in outcomes
            if isinstance(o, BaseException) and not isinstance(o, asyncio.CancelledError)
        ]
        assert unexpected == []
        accepted = sum(1 for o in outcomes if not isinstance(o, BaseException))
        assert accepted <= delivered <= 300
        assert max_pending_seen <= limit
        assert peak == 1


async def test_children_published_from_handlers_form_a_causation_chain() -> None:
    events: list[Event] = []
    async with EventBus(handler_timeout=2) as bus:

        @bus.on("chain.step")
        async def step(e: Event) -> None:
            events.append(e)
            assert request_var.get() == "req-root"
            if e.payload["depth"] < 5:
                bus.publish_nowait("chain.step", {"depth": e.payload["depth"] + 1})

        @bus.on("chain.sync")
        def sync_step(e: Event) -> None:
            events.append(e)
            if e.payload["depth"] < 5:
                bus.emit("chain.sync", {"depth": e.payload["depth"] + 1})

        request_var.set("req-root")
        root = bus.publish_nowait("chain.step", {"depth": 0}, correlation_id="corr-1")
        root2 = bus.publish_nowait("chain.sync", {"depth": 0}, correlation_id="corr-2")
        assert root is not None and root2 is not None
        assert await bus.drain(2)
    for kind, corr, first in (("chain.step", "corr-1", root), ("chain.sync", "corr-2", root2)):
        chain = [e for e in events if e.event_type == kind]
        assert [e.payload["depth"] for e in chain] == list(range(6))
        assert all(e.correlation_id == corr for e in chain)
        assert chain[0].event_id == first.event_id
        for parent, child in itertools.pairwise(chain):
            assert child.causation_id == parent.event_id


async def test_handler_error_is_reported_once_never_recursively() -> None:
    reports: list[Event] = []
    async with EventBus(handler_timeout=2) as bus:

        @bus.on("*")
        def always_fails(e: Event) -> None:
            if e.event_type == "system.handler_error":
                reports.append(e)
            raise RuntimeError("nope")

        for _ in range(3):
            bus.publish_nowait("he.x", {})
        await bus.publish("he.y", {})
        assert await bus.drain(2)
        await asyncio.sleep(0.01)
        assert await bus.drain(2)
    assert len(reports) == 4
    assert sorted(r.payload["original_event_type"] for r in reports) == ["he.x"] * 3 + ["he.y"]


async def test_publish_from_another_loop_in_another_thread() -> None:
    got: list[tuple[str | None, str]] = []
    async with EventBus(handler_timeout=2) as bus:

        @bus.on("xl.x")
        async def on_bus_loop(e: Event) -> str:
            got.append((get_correlation_id(), request_var.get()))
            return threading.current_thread().name

        @bus.on("xl.x", priority=-1)
        def in_pool(e: Event) -> str:
            got.append((get_correlation_id(), request_var.get()))
            return "pool"

        bus_thread = threading.current_thread().name

        def other() -> Any:
            async def main() -> Any:
                request_var.set("other-loop")
                results = [
                    await bus.publish("xl.x", {"i": i}, correlation_id=f"c{i}") for i in range(20)
                ]
                return results

            return asyncio.run(main())

        results = await asyncio.to_thread(other)
        assert await bus.drain(2)
    assert all(r.ok and r.values == [bus_thread, "pool"] for r in results)
    assert got == [(f"c{i}", "other-loop") for i in range(20) for _ in range(2)]


async def test_many_subscriptions_and_patterns() -> None:
    hits = 0
    async with EventBus(handler_timeout=5) as bus:
        for i in range(3000):
            bus.on(f"noise{i}.*", lambda e: None)

        async def h(e: Event) -> None:
            nonlocal hits
            hits += 1

        for _ in range(200):
            bus.on("many.x", h)
        r = await bus.publish("many.x", {})
        assert r.ok and len(r.handler_results) == 200
        for _ in range(10):
            bus.publish_nowait("many.x", {})
        assert await bus.drain(5)
    assert hits == 200 * 11


async def test_direct_delivery_releases_the_lane_that_replaced_a_dead_one() -> None:
    """A waited publish running in the publisher's task holds its lane; if the lane's
    worker is cancelled from outside meanwhile, the replacement lane inherits that
    count and the direct delivery must release the replacement (it used to release
    the dead lane, leaving the new one 'busy' forever and the queued event stuck)."""
    seen: list[int] = []
    gate = asyncio.Event()
    async with EventBus(handler_timeout=5) as bus:

        async def h(e: Event) -> None:
            seen.append(e.payload["n"])
            if e.payload["n"] == 1:
                await gate.wait()

        sub = bus.on("lane.swap", h)
        first = asyncio.create_task(bus.publish("lane.swap", {"n": 1}))  # direct: lanes idle
        while not seen:
            await asyncio.sleep(0)
        bus.publish_nowait("lane.swap", {"n": 2})  # queued behind the running delivery
        old_lane = sub._lane
        for worker in old_lane.workers:
            worker.cancel()  # e.g. a library cancelling tasks it does not own
        await asyncio.sleep(0.01)
        assert sub._lane is not old_lane  # a replacement took over the mailbox
        assert seen == [1]  # and still waits for the direct delivery
        gate.set()
        assert (await first).ok
        assert await bus.drain(2)
        assert seen == [1, 2]
        assert sub._lane.running == 0
    gc.collect()  # finalise the dead lane worker here


async def test_sync_batch_counts_as_running_from_its_first_pop() -> None:
    """While the loop takes a batch for a sync lane, the lane is never seen idle
    (empty mailbox and nothing running): a waited emit from another thread would
    otherwise run inline ahead of events it published earlier."""
    observed: list[tuple[int, int]] = []
    async with EventBus() as bus:
        sub = bus.on("batch.count", lambda e: None)
        d = bus._dispatcher
        for n in range(5):
            bus.publish_nowait("batch.count", {"n": n})
        lane = sub._lane
        assert lane is not None
        real_take = d._take

        def watching_take(lane_: Any, held: int = 0) -> Any:
            observed.append((len(lane_.mailbox), lane_.running))
            return real_take(lane_, held)

        d._take = watching_take  # type: ignore[method-assign]
        try:
            batch, _ctxs = d._take_batch(lane, 100)
            assert len(batch) == 5
            assert lane.running == 1  # held by the batch until the worker finishes it
            assert all(running >= 1 for _size, running in observed)
            lane.running -= 1
            d._advance_all(batch)
        finally:
            del d._take
    assert not observed or observed[-1][0] == 0
