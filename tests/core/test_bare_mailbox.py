"""Lane mailboxes holding bare fire-and-forget events, context markers and chains.

``publish_nowait`` on an unbounded bus queues the bare Event (no chain record);
these tests mix that with waited publishes, context changes, sync lanes,
unsubscribe and close, and check order, contexts, counts and stats.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from aperion_event_bus import Event, EventBus

tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="-")


async def test_mixed_bare_events_and_waited_publishes_keep_order_and_contexts() -> None:
    seen: list[tuple[int, str]] = []
    gate = asyncio.Event()
    async with EventBus(handler_timeout=5) as bus:

        @bus.on("mix.x")
        async def handler(e: Event) -> str:
            if e.payload["n"] == 0:
                await gate.wait()  # keeps the lane busy: everything after it queues
            seen.append((e.payload["n"], tag.get()))
            tag.set("handler-was-here")  # must not leak into the next event
            return f"r{e.payload['n']}"

        tag.set("a")
        bus.publish_nowait("mix.x", {"n": 0})
        await asyncio.sleep(0.01)  # n=0 is running and holds the lane
        bus.publish_nowait("mix.x", {"n": 1})
        bus.publish_nowait("mix.x", {"n": 2})
        tag.set("b")
        waited = asyncio.create_task(bus.publish("mix.x", {"n": 3}))  # a chain with results
        await asyncio.sleep(0)
        bus.publish_nowait("mix.x", {"n": 4})  # same context as the chain before it
        tag.set("c")
        bus.publish_nowait("mix.x", {"n": 5})
        assert bus.get_stats()["queue_depth"] == 5  # context markers are not events
        gate.set()
        result = await asyncio.wait_for(waited, 5)
        assert result.values == ["r3"]
        assert await bus.drain(5)
    assert seen == [(0, "a"), (1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")]


async def test_sync_lane_runs_bare_events_in_their_publishers_context() -> None:
    seen: list[tuple[int, str]] = []
    async with EventBus() as bus:

        def handler(e: Event) -> None:  # sync: runs in the pool, in batches
            seen.append((e.payload["n"], tag.get()))

        bus.on("sync.x", handler)
        for n in range(300):
            tag.set(f"t{n // 100}")
            bus.publish_nowait("sync.x", {"n": n})
        assert await bus.drain(5)
    assert seen == [(n, f"t{n // 100}") for n in range(300)]


async def test_failures_and_suspensions_on_bare_events_are_reported() -> None:
    class Custom(BaseException):
        pass

    async with EventBus(handler_timeout=5) as bus:
        errors: list[str] = []

        @bus.on("system.handler_error")
        async def on_error(e: Event) -> None:
            errors.append(str(e.payload.get("error_type")))

        @bus.on("bare.fail")
        async def handler(e: Event) -> None:
            n = e.payload["n"]
            if n == 1:
                await asyncio.sleep(0)
                raise ValueError("after suspending")
            if n == 2:
                raise Custom("a BaseException of the handler's own")

        for n in range(4):
            bus.publish_nowait("bare.fail", {"n": n})
        assert await bus.drain(5)
        assert bus.get_stats()["handler_failures"] == 2
    assert sorted(errors) == ["Custom", "ValueError"]


async def test_unsubscribe_skips_queued_bare_events_and_drain_completes() -> None:
    calls: list[int] = []
    gate = asyncio.Event()
    async with EventBus(handler_timeout=5) as bus:

        @bus.on("gone.x")
        async def handler(e: Event) -> None:
            if e.payload["n"] == 0:
                await gate.wait()
            calls.append(e.payload["n"])

        for n in range(50):
            bus.publish_nowait("gone.x", {"n": n})
        await asyncio.sleep(0.01)
        assert bus.off(handler) == 1
        gate.set()
        assert await bus.drain(5)
        assert bus.get_pending_count() == 0
    assert calls == [0]


async def test_close_abandons_queued_bare_events() -> None:
    gate = asyncio.Event()
    bus = EventBus(handler_timeout=5)

    @bus.on("close.x")
    async def handler(e: Event) -> None:
        await gate.wait()

    async with bus:
        for n in range(10):
            bus.publish_nowait("close.x", {"n": n})
        await asyncio.sleep(0.01)
        assert not await bus.close(0.05)  # the first handler never finishes
    assert bus.get_stats()["queue_depth"] == 0


def test_emits_from_threads_keep_each_publishers_context_and_order() -> None:
    """Fire-and-forget emits from several threads travel through the ingress as
    bare events; each handler call sees its own publisher's context, and each
    publisher's events arrive in order, for an async and a sync subscription."""
    import threading

    seen_async: list[tuple[str, int, str]] = []
    seen_sync: list[tuple[str, int, str]] = []
    bus = EventBus()
    try:

        async def on_async(e: Event) -> None:
            seen_async.append((e.payload["who"], e.payload["n"], tag.get()))

        def on_sync(e: Event) -> None:
            seen_sync.append((e.payload["who"], e.payload["n"], tag.get()))

        bus.subscribe(on_async, "thr.a")
        bus.subscribe(on_sync, "thr.s")

        def publisher(who: str) -> None:
            for n in range(500):
                tag.set(f"{who}-{n // 50}")  # the context changes every 50 events
                bus.emit("thr.a", {"who": who, "n": n})
                bus.emit("thr.s", {"who": who, "n": n})

        threads = [threading.Thread(target=publisher, args=(f"p{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        asyncio.run(bus.wait_for_pending(10))
        assert bus.get_pending_count() == 0
    finally:
        bus.shutdown(2)
    for seen in (seen_async, seen_sync):
        assert len(seen) == 2000
        assert all(ctx == f"{who}-{n // 50}" for who, n, ctx in seen)
        for i in range(4):
            assert [n for who, n, _ in seen if who == f"p{i}"] == list(range(500))


async def test_sync_timeout_inside_a_batch_of_bare_events() -> None:
    """A sync handler that overruns its timeout on one bare event: that delivery is
    reported as timed out, the rest of the batch goes back to the lane (as chain
    records, in order) and runs on another pool thread."""
    import threading
    import time as _time

    seen: list[int] = []
    contexts: dict[int, str] = {}
    release = threading.Event()
    async with EventBus(max_workers=4) as bus:

        def handler(e: Event) -> None:
            n = e.payload["n"]
            contexts[n] = tag.get()
            if n == 3:
                release.wait(2)  # overruns the 0.1 s timeout, then returns
            seen.append(n)

        bus.on("slow.sync", handler, timeout=0.1)
        tag.set("ctx-1")
        for n in range(10):
            if n == 6:
                tag.set("ctx-2")
            bus.publish_nowait("slow.sync", {"n": n})
        deadline = _time.monotonic() + 5
        while bus.get_stats()["handler_timeouts"] < 1 and _time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        release.set()
        assert await bus.drain(5)
        assert bus.get_stats()["handler_timeouts"] == 1
        while len(seen) < 10 and _time.monotonic() < deadline:  # the abandoned call ends too
            await asyncio.sleep(0.01)
    assert sorted(seen) == list(range(10))
    rest = [n for n in seen if n != 3]
    assert rest == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert contexts == {n: "ctx-1" if n < 6 else "ctx-2" for n in range(10)}


async def test_a_failing_observer_does_not_wedge_the_lane(caplog: Any) -> None:
    """If reporting an outcome raises (a broken metrics backend), the lane's
    bookkeeping is already done: later events still run and drain() completes."""

    class Broken:
        def handler_finished(self, *args: Any) -> None:
            raise RuntimeError("metrics backend down")

        def handler_retry(self, *args: Any) -> None:
            pass

    handled: list[int] = []
    async with EventBus() as bus:

        @bus.on("obs.x")
        async def handler(e: Event) -> None:
            handled.append(e.payload["n"])

        bus._dispatcher.observer = Broken()  # type: ignore[assignment]
        for n in range(5):
            bus.publish_nowait("obs.x", {"n": n})
        assert await bus.drain(5)
        bus._dispatcher.observer = None
        for n in range(5, 8):
            bus.publish_nowait("obs.x", {"n": n})
        assert await bus.drain(5)
        assert bus.get_pending_count() == 0
    assert handled[-3:] == [5, 6, 7]
