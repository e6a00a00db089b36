"""Async API: publish results, ordering, priority, context, timeouts, retries, errors."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading
import time
from typing import Any, ClassVar

import pytest

from aperion_event_bus import (
    BusClosedError,
    Event,
    EventBus,
    HandlerTimeoutError,
    PublishFailedError,
    ValidationError,
    current_event,
    event_type,
    get_correlation_id,
)

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="-")


async def test_publish_returns_results_in_priority_order() -> None:
    async with EventBus() as bus:
        @bus.on("order.placed", priority=1)
        def low(e: Event) -> str:
            return "low"

        @bus.on("order.placed", priority=10)
        async def high(e: Event) -> str:
            return "high"

        result = await bus.publish("order.placed", {"id": 1})
        assert result.ok and result.values == ["high", "low"]
        assert result.event.event_type == "order.placed"
        assert [r.handler_name.rsplit(".", 1)[-1] for r in result.handler_results] == ["high", "low"]
        assert result.raise_for_errors() is result


async def test_higher_priority_slow_handler_finishes_before_lower_starts() -> None:
    log: list[str] = []
    async with EventBus() as bus:
        @bus.on("x.y", priority=10)
        async def slow(e: Event) -> None:
            log.append("slow-start")
            await asyncio.sleep(0.05)
            log.append("slow-end")

        @bus.on("x.y", priority=5)
        def sync_mid(e: Event) -> None:
            time.sleep(0.02)
            log.append("mid")

        @bus.on("x.y", priority=1)
        async def fast(e: Event) -> None:
            log.append("fast")

        bus.publish_nowait("x.y", {})
        await bus.drain(2)
        assert log == ["slow-start", "slow-end", "mid", "fast"]


async def test_each_subscription_sees_publish_order() -> None:
    seen_async: list[int] = []
    seen_sync: list[int] = []
    async with EventBus() as bus:
        @bus.on("n.x")
        async def a(e: Event) -> None:
            if e.payload["i"] % 7 == 0:
                await asyncio.sleep(0)
            seen_async.append(e.payload["i"])

        @bus.on("n.*", priority=1)
        def s(e: Event) -> None:
            seen_sync.append(e.payload["i"])

        for i in range(2000):
            if i % 3 == 0:
                await bus.publish("n.x", {"i": i})
            else:
                bus.publish_nowait("n.x", {"i": i})
        await bus.drain(5)
    assert seen_async == list(range(2000))
    assert seen_sync == list(range(2000))


async def test_context_propagates_to_sync_pool_threads_and_children() -> None:
    seen: dict[str, Any] = {}
    async with EventBus() as bus:
        @bus.on("req.received")
        def on_request(e: Event) -> None:
            seen["thread"] = threading.current_thread().name
            seen["cid"] = get_correlation_id()
            seen["var"] = request_var.get()
            seen["current"] = current_event()
            bus.emit("req.audited", {"by": "sync"})

        @bus.on("req.audited")
        async def on_child(e: Event) -> None:
            seen["child"] = e
            seen["child_var"] = request_var.get()

        request_var.set("req-42")
        result = await bus.publish("req.received", {}, correlation_id="corr-1")
        await bus.drain(2)
    assert seen["thread"] != threading.current_thread().name
    assert seen["cid"] == "corr-1" and seen["var"] == "req-42"
    assert seen["current"].event_id == result.event_id
    child = seen["child"]
    assert child.correlation_id == "corr-1"
    assert child.causation_id == result.event_id
    assert seen["child_var"] == "req-42"


async def test_correlation_defaults() -> None:
    async with EventBus() as bus:
        root = (await bus.publish("a.b", {})).event
        assert root.correlation_id == root.event_id and root.causation_id is None
        from aperion_event_bus import CorrelationContext

        with CorrelationContext("ctx-id"):
            inside = (await bus.publish("a.b", {})).event
        assert inside.correlation_id == "ctx-id"


async def test_handlers_cannot_mutate_shared_payload() -> None:
    async with EventBus() as bus:
        @bus.on("m.x", priority=2)
        def mutator(e: Event) -> None:
            e.payload["items"].append(99)

        @bus.on("m.x", priority=1)
        def reader(e: Event) -> list[int]:
            return list(e.payload["items"])

        payload = {"items": [1]}
        result = await bus.publish("m.x", payload)
        assert isinstance(result.handler_results[0].error, TypeError)
        assert result.handler_results[1].value == [1]
        assert payload == {"items": [1]}


async def test_loop_is_not_blocked_by_sync_handlers() -> None:
    """A ticker on the loop keeps its pace while sync handlers sleep in the pool.

    Lower-risk statistics than a strict maximum: the median and 90th percentile of
    the ticker's delay stay within a few ms (a loaded 2-core CI machine adds
    scheduling noise to single ticks), and no tick waits as long as one blocking
    handler call. A sync handler run on the loop delays the ticks by the handler's
    whole batch."""
    block = 0.05
    delays: list[float] = []
    async with EventBus(max_workers=4) as bus:
        @bus.on("slow.sync")
        def blocking(e: Event) -> None:
            time.sleep(block)

        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.005)
                delays.append(time.perf_counter() - t0 - 0.005)

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)  # the ticker is running before the handlers start
        for _ in range(7):
            bus.publish_nowait("slow.sync", {})
        await bus.publish("slow.sync", {})
        await bus.drain(5)
        stop.set()
        await tick
    delays.sort()
    assert len(delays) >= 20  # 8 x 50 ms of handler time: the ticker kept ticking
    median, p90 = delays[len(delays) // 2], delays[len(delays) * 9 // 10]
    assert median < 0.01 and p90 < 0.01, f"ticker delays: median {median:.4f}s, p90 {p90:.4f}s"
    assert delays[-1] < block, f"a tick waited {delays[-1]:.4f}s: the loop was blocked"


async def test_async_timeout_cancels_handler() -> None:
    cancelled = asyncio.Event()
    async with EventBus() as bus:
        @bus.on("t.x", timeout=0.05)
        async def hang(e: Event) -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        result = await bus.publish("t.x", {})
        assert not result.ok
        [r] = result.handler_results
        assert r.timed_out and isinstance(r.error, HandlerTimeoutError)
        assert cancelled.is_set()
        with pytest.raises(PublishFailedError, match="timed out"):
            result.raise_for_errors()


async def test_sync_timeout_is_reported_and_abandoned() -> None:
    release = threading.Event()
    async with EventBus() as bus:
        @bus.on("t.sync", timeout=0.05)
        def stuck(e: Event) -> None:
            release.wait(5)

        t0 = time.perf_counter()
        result = await bus.publish("t.sync", {})
        elapsed = time.perf_counter() - t0
        release.set()
        [r] = result.handler_results
        assert r.timed_out and isinstance(r.error, HandlerTimeoutError)
        assert elapsed < 2


async def test_handler_internal_timeouterror_is_not_a_bus_timeout() -> None:
    async with EventBus() as bus:
        @bus.on("t.own")
        async def own(e: Event) -> None:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)

        [r] = (await bus.publish("t.own", {})).handler_results
        assert isinstance(r.error, TimeoutError) and not r.timed_out


BACKOFF = 0.02  # seconds; attempt n+1 starts at least BACKOFF * 2**n after attempt n


def _assert_backoff(stamps: list[float], attempts: int) -> None:
    """The gaps between attempts are at least ``BACKOFF * 2**n`` (lower bounds only:
    a loaded machine may make them longer, never shorter)."""
    assert len(stamps) == attempts
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    for n, gap in enumerate(gaps):
        # 1 ms below the bound: the loop may fire a timer up to its clock resolution early
        assert gap >= BACKOFF * 2**n - 0.001, f"attempt {n + 2} came {gap:.4f}s after the one before"


@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize("mode", ["await", "nowait"])
async def test_retries_with_backoff_then_success(kind: str, mode: str) -> None:
    """Failed attempts are retried after an exponential backoff, for async handlers
    (awaited sleep on the loop) and sync handlers (sleep on the pool thread), on the
    direct path (``await bus.publish``) and the lane path (``publish_nowait``)."""
    stamps: list[float] = []
    done = asyncio.Event()

    def attempt() -> str:
        stamps.append(time.perf_counter())
        if len(stamps) < 4:
            raise RuntimeError("transient")
        return "ok"

    async with EventBus() as bus:
        if kind == "async":

            async def flaky(e: Event) -> str:
                return attempt()

            bus.on("r.x", flaky, retries=3, retry_backoff=BACKOFF)
        else:
            bus.on("r.x", lambda e: attempt(), retries=3, retry_backoff=BACKOFF)
        bus.on("system.handler_error", lambda e: done.set())
        if mode == "await":
            result = await bus.publish("r.x", {})
            assert result.ok and result.values == ["ok"]
            assert result.handler_results[0].attempts == 4
        else:
            bus.publish_nowait("r.x", {})
            assert await bus.drain(10)
            assert not done.is_set()  # the last attempt succeeded: no failure reported
    _assert_backoff(stamps, 4)


def test_sync_retries_with_backoff_inline() -> None:
    """``emit(..., wait_for_handlers=True)`` from plain sync code: the handler runs in
    the calling thread, and its retries wait out the backoff there too."""
    stamps: list[float] = []

    def flaky(e: Event) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) < 4:
            raise RuntimeError("transient")

    bus = EventBus()
    try:
        bus.on("r.x", flaky, retries=3, retry_backoff=BACKOFF)
        bus.emit("r.x", {}, wait_for_handlers=True)
    finally:
        bus.shutdown(5)
    _assert_backoff(stamps, 4)


async def test_sync_retries_exhausted_reports_failure() -> None:
    calls = 0
    async with EventBus() as bus:
        @bus.on("r.s", retries=1, retry_backoff=0)
        def always(e: Event) -> None:
            nonlocal calls
            calls += 1
            raise ValueError("nope")

        result = await bus.publish("r.s", {})
        assert calls == 2 and result.handler_results[0].attempts == 2
        assert isinstance(result.errors[0], ValueError)


async def test_failure_is_logged_and_published_once(caplog: pytest.LogCaptureFixture) -> None:
    reports: list[Event] = []
    async with EventBus() as bus:
        @bus.on("f.x")
        def broken(e: Event) -> None:
            raise RuntimeError("kaput")

        @bus.on("system.handler_error")
        def on_error(e: Event) -> None:
            reports.append(e)
            raise RuntimeError("the error handler fails too")  # must not recurse

        with caplog.at_level("ERROR", logger="aperion_event_bus"):
            result = await bus.publish("f.x", {"k": "v"})
            await bus.drain(2)
    assert not result.ok
    assert len(reports) == 1
    report = reports[0]
    assert report.source == "event_bus"
    assert report.payload["original_event_id"] == result.event_id
    assert report.payload["original_event_type"] == "f.x"
    assert report.payload["error"] == "kaput" and report.payload["error_type"] == "RuntimeError"
    assert report.payload["handler_name"].endswith("broken")
    assert report.causation_id == result.event_id
    assert report.correlation_id == result.event.correlation_id
    messages = [r.getMessage() for r in caplog.records]
    assert any("kaput" in m for m in messages)
    assert any("the error handler fails too" in m for m in messages)


async def test_async_callable_object_is_async_handler() -> None:
    class Handler:
        def __init__(self) -> None:
            self.thread: str | None = None

        async def __call__(self, e: Event) -> str:
            self.thread = threading.current_thread().name
            return "called"

    h = Handler()
    async with EventBus() as bus:
        bus.on("o.x", h)
        result = await bus.publish("o.x", {})
    assert result.values == ["called"]
    assert h.thread == threading.current_thread().name  # ran on the loop, not a pool thread


async def test_wait_for_and_where() -> None:
    async with EventBus() as bus:
        waiter = asyncio.create_task(bus.wait_for("job.*", where=lambda e: e.payload["n"] == 2, timeout=2))
        await asyncio.sleep(0)
        for n in range(4):
            bus.publish_nowait("job.done", {"n": n})
        event = await waiter
        assert event.payload["n"] == 2
        with pytest.raises(TimeoutError):
            await bus.wait_for("never.happens", timeout=0.05)


async def test_close_rejects_new_events_and_cancels_stragglers() -> None:
    started = asyncio.Event()
    bus = EventBus()

    @bus.on("c.x")
    async def forever(e: Event) -> None:
        started.set()
        await asyncio.sleep(30)

    bus.publish_nowait("c.x", {})
    await started.wait()
    t0 = time.perf_counter()
    drained = await bus.close(timeout=0.1)
    assert not drained and time.perf_counter() - t0 < 2
    with pytest.raises(BusClosedError):
        await bus.publish("c.x", {})


async def test_publish_nowait_returns_event() -> None:
    async with EventBus() as bus:
        got: list[Event] = []
        bus.on("p.x", got.append)
        ev = bus.publish_nowait("p.x", {"a": 1}, source="svc")
        assert ev is not None and ev.source == "svc"
        await bus.drain(2)
        assert got[0].event_id == ev.event_id


async def test_a_long_burst_of_quick_handlers_lets_the_loop_run() -> None:
    """A lane running thousands of queued handlers that never suspend still yields
    to the loop regularly: a callback scheduled after the burst runs long before
    the last event is handled."""
    loop = asyncio.get_running_loop()
    seen_at: list[int] = []
    handled = 0
    async with EventBus() as bus:

        @bus.on("burst.x")
        async def quick(e: Event) -> None:
            nonlocal handled
            handled += 1

        for i in range(5000):
            bus.publish_nowait("burst.x", {"i": i})
        loop.call_soon(lambda: seen_at.append(handled))
        assert await bus.drain(10)
    assert handled == 5000
    assert seen_at and seen_at[0] < 1000


async def test_quick_lane_path_reports_failures_and_keeps_order() -> None:
    """Fire-and-forget deliveries on the quick lane path: order kept, a failing
    handler reported once per event, a suspending handler finished by the lane."""
    order: list[int] = []
    async with EventBus(handler_timeout=2) as bus:

        @bus.on("q.x")
        async def handler(e: Event) -> None:
            i = e.payload["i"]
            if i % 3 == 0:
                await asyncio.sleep(0)
            order.append(i)
            if i % 5 == 0:
                raise ValueError(f"bad {i}")

        for i in range(600):
            bus.publish_nowait("q.x", {"i": i})
        assert await bus.drain(10)
        assert order == list(range(600))
        assert bus.get_stats()["handler_failures"] == 120


class UserCreated:
    pass


async def test_typed_events_pydantic() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Signup(pydantic.BaseModel):
        event_type: ClassVar[str] = "user.signed_up"
        user_id: int
        email: str

    received: list[Any] = []
    async with EventBus() as bus:
        @bus.on(Signup)
        async def handle(model: Signup) -> None:
            received.append(model)

        await bus.publish(Signup(user_id=1, email="a@b.c"))
        await bus.publish("user.signed_up", {"user_id": "2", "email": "x@y.z"})
        with pytest.raises(ValidationError, match="user_id") as info:
            await bus.publish("user.signed_up", {"user_id": "not-a-number", "email": "x"})
        assert info.value.field == "user_id"
    assert [r.user_id for r in received] == [1, 2]
    assert all(isinstance(r, Signup) for r in received)


async def test_typed_events_dataclass_and_decorator() -> None:
    import dataclasses

    @event_type("order.shipped")
    @dataclasses.dataclass(frozen=True)
    class Shipped:
        order_id: str

    got: list[Shipped] = []
    async with EventBus() as bus:
        bus.on(Shipped, got.append)
        result = await bus.publish(Shipped("o-1"))
        assert result.event.event_type == "order.shipped"
        assert result.event.payload == {"order_id": "o-1"}
        with pytest.raises(ValidationError, match="unknown field"):
            await bus.publish("order.shipped", {"nope": 1})
    assert got == [Shipped("o-1")]


async def test_typed_event_base_class() -> None:
    pytest.importorskip("pydantic")
    from aperion_event_bus import TypedEvent

    class Paid(TypedEvent):
        event_type: ClassVar[str] = "invoice.paid"
        amount: float

    async with EventBus() as bus:
        got: list[Paid] = []
        bus.on(Paid, got.append)
        await bus.publish(Paid(amount=3.5))
    assert got[0].amount == 3.5
    with pytest.raises(Exception):  # frozen model
        got[0].amount = 1  # type: ignore[misc]


async def test_parallel_handlers_overlap() -> None:
    running = 0
    peak = 0
    async with EventBus(parallel_handlers=True) as bus:
        async def h(e: Event) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1

        for _ in range(3):
            bus.on("p.x", h)
        bus.publish_nowait("p.x", {})
        await bus.drain(2)
    assert peak == 3


async def test_concurrency_option_allows_overlap() -> None:
    running = 0
    peak = 0
    async with EventBus() as bus:
        @bus.on("c.x", concurrency=4)
        async def h(e: Event) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1

        for _ in range(8):
            bus.publish_nowait("c.x", {})
        await bus.drain(2)
    assert peak == 4


async def test_publisher_cancellation_hands_rest_to_lanes() -> None:
    later: list[str] = []
    async with EventBus() as bus:
        @bus.on("k.x", priority=10)
        async def first(e: Event) -> None:
            await asyncio.sleep(1)

        @bus.on("k.x", priority=1)
        async def second(e: Event) -> None:
            later.append("second ran")

        task = asyncio.create_task(bus.publish("k.x", {}))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await bus.drain(2)
    assert later == ["second ran"]


async def test_shared_context_snapshots_never_leak_between_events() -> None:
    """Queued events may share the publisher's context snapshot; each handler call
    still runs in its own copy and sees exactly its publisher's values."""
    seen: list[tuple[int, str]] = []
    async with EventBus() as bus:
        @bus.on("ctx.shared")
        async def handler(e: Event) -> None:
            seen.append((e.payload["n"], request_var.get()))
            request_var.set("changed-by-handler")  # must not reach the next event

        request_var.set("first")
        for n in range(3):
            bus.publish_nowait("ctx.shared", {"n": n})
        request_var.set("second")
        for n in range(3, 6):
            bus.publish_nowait("ctx.shared", {"n": n})
        await bus.drain(2)
    assert seen == [(0, "first"), (1, "first"), (2, "first"), (3, "second"), (4, "second"), (5, "second")]


async def test_handler_results_are_frozen_dataclass_instances() -> None:
    """The bus builds them through a fast twin class (re-classed after assignment):
    what the caller gets is a plain frozen HandlerResult."""
    import copy
    import dataclasses
    import pickle

    from aperion_event_bus import HandlerResult

    async with EventBus() as bus:

        @bus.on("order.placed")
        async def handler(e: Event) -> int:
            return 7

        [result] = (await bus.publish("order.placed", {"id": 1})).handler_results
    assert type(result) is HandlerResult
    expected = HandlerResult(result.subscription_id, result.handler_name, 7, None, False, result.duration, 1)
    assert result == expected and hash(result) == hash(expected)
    assert pickle.loads(pickle.dumps(result)) == result == copy.deepcopy(result)
    assert dataclasses.asdict(result)["value"] == 7
    assert dataclasses.replace(result, value=8).value == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.value = 1  # type: ignore[misc]
    assert not hasattr(result, "__dict__")
