"""The testing helpers users get: EventRecorder and the pytest plugin's fixtures."""

from __future__ import annotations

import asyncio

import pytest

from aperion_event_bus import Event, EventBus, ValidationError
from aperion_event_bus.testing import EventRecorder


async def test_recorder_fixture_captures_and_asserts(aperion_bus: EventBus, event_recorder: EventRecorder) -> None:
    await aperion_bus.publish("user.created", {"user_id": 1, "email": "a@b.c"})
    aperion_bus.publish_nowait("user.deleted", {"user_id": 2})
    await event_recorder.wait_for("user.deleted")
    event = event_recorder.assert_published("user.created", user_id=1)
    assert event.payload["email"] == "a@b.c"
    event_recorder.assert_published("user.*", count=2)
    event_recorder.assert_not_published("order.*")
    with pytest.raises(AssertionError, match=r"expected user\.created"):
        event_recorder.assert_published("user.created", user_id=99)
    with pytest.raises(AssertionError, match=r"expected no user\.deleted"):
        event_recorder.assert_not_published("user.deleted")
    assert [e.event_type for e in event_recorder.of_type("user.*")] == ["user.created", "user.deleted"]
    event_recorder.clear()
    assert event_recorder.events == []


def test_recorder_in_sync_code() -> None:
    bus = EventBus()
    with EventRecorder(bus, pattern="job.*") as recorder:
        bus.emit("job.started", {"id": 1})
        bus.emit("other.thing", {})
        recorder.wait_for_sync("job.started", timeout=2)
        assert [e.event_type for e in recorder.events] == ["job.started"]
        with pytest.raises(AssertionError, match="timed out"):
            recorder.wait_for_sync("job.finished", timeout=0.05)
    bus.emit("job.finished", {})
    bus.shutdown(2)
    assert recorder.of_type("job.finished") == []  # closed: no longer recording


async def test_wait_for_times_out_with_a_clear_message(event_recorder: EventRecorder) -> None:
    with pytest.raises(AssertionError, match=r"waiting for 1 x never\.happens"):
        await event_recorder.wait_for("never.happens", timeout=0.05)


# ------------------------------------------------ taps: observers, not subscriptions
async def test_recorder_and_wait_for_are_invisible_to_the_code_under_test() -> None:
    """Neither a recorder nor a pending ``wait_for`` shows up in a PublishResult,
    the subscription list or the stats."""
    async with EventBus() as bus:
        bus.on("job.done", lambda e: "mine")
        plain = bus.get_stats()
        with EventRecorder(bus):
            waiter = asyncio.create_task(bus.wait_for("job.*", where=lambda e: e.payload["n"] == 1))
            await asyncio.sleep(0)
            result = await bus.publish("job.done", {"n": 0})
            assert result.values == ["mine"] and len(result.handler_results) == 1
            assert len(bus.get_subscriptions()) == len(bus.subscriptions) == 1
            stats = bus.get_stats()
            for key in ("active_subscriptions", "total_subscriptions", "event_types_subscribed"):
                assert stats[key] == plain[key], key
            bus.publish_nowait("job.done", {"n": 1})
            assert (await waiter).payload["n"] == 1
        assert bus._taps == () and not bus._slow_publish  # the hot paths are back


async def test_recorder_sees_every_published_event_in_order_with_its_context() -> None:
    """Events nobody handles, every publishing API, the handler_error reports, and
    the publisher's correlation id; in publish order."""
    from aperion_event_bus import CorrelationContext

    async with EventBus() as bus:
        def boom(e: Event) -> None:
            raise RuntimeError("boom")

        bus.on("fail.now", boom)
        with EventRecorder(bus) as recorder:
            with CorrelationContext("corr-1"):
                for i in range(50):
                    bus.publish_nowait("n.nobody", {"i": i})
                    await bus.publish("n.nobody", {"i": i}, wait=False)
            await bus.publish("fail.now", {})
            await asyncio.to_thread(bus.emit, "n.thread", {"i": 0})
            assert await bus.drain(5)
        types = [e.event_type for e in recorder.events]
        assert types[:100] == ["n.nobody"] * 100
        assert [e.payload["i"] for e in recorder.events[:100]] == [i for i in range(50) for _ in (0, 1)]
        assert all(e.correlation_id == "corr-1" for e in recorder.events[:100])
        assert types[100:] == ["fail.now", "system.handler_error", "n.thread"]
        assert recorder.events[101].causation_id == recorder.events[100].event_id


def test_recorder_in_plain_sync_code_sees_emit_and_waited_emit() -> None:
    bus = EventBus()
    try:
        with EventRecorder(bus, pattern="s.*") as recorder:
            bus.emit("s.one", {}, wait_for_handlers=True)
            bus.emit("s.two", {})
            bus.emit("other.x", {})
            assert [e.event_type for e in recorder.events] == ["s.one", "s.two"]
    finally:
        bus.shutdown(2)


async def test_a_failing_tap_is_logged_and_never_reaches_the_publisher(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def bad(event: Event) -> None:
        raise ValueError("tap broke")

    async with EventBus() as bus:
        seen: list[str] = []
        bus.on("a.b", lambda e: seen.append(e.event_type))
        bus.add_tap(bad)
        with EventRecorder(bus) as recorder:
            result = await bus.publish("a.b", {})
            bus.publish_nowait("a.b", {})
            assert await bus.drain(5)
        assert result.ok and seen == ["a.b", "a.b"] and len(recorder.events) == 2
        assert "tap broke" in caplog.text
        assert bus.remove_tap(bad) and not bus.remove_tap(bad)
        with pytest.raises(TypeError, match="callable"):
            bus.add_tap("nope")  # type: ignore[arg-type]


async def test_wait_for_where_error_timeout_and_cancellation_clean_up() -> None:
    """``where`` raising reaches the waiter; a timeout or a cancelled waiter removes
    its tap; an event from another thread wakes the waiter on its own loop."""
    async with EventBus() as bus:
        def broken(e: Event) -> bool:
            raise KeyError("missing")

        waiter = asyncio.create_task(bus.wait_for("w.*", where=broken))
        await asyncio.sleep(0)
        bus.publish_nowait("w.x", {})
        with pytest.raises(KeyError, match="missing"):
            await waiter
        with pytest.raises(TimeoutError):
            await bus.wait_for("w.never", timeout=0.01)
        waiter = asyncio.create_task(bus.wait_for("w.never"))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert bus._taps == ()
        waiter = asyncio.create_task(bus.wait_for("w.thread", timeout=5))
        await asyncio.sleep(0)
        await asyncio.to_thread(bus.emit, "w.thread", {"from": "thread"})
        assert (await waiter).payload["from"] == "thread"
        with pytest.raises(ValidationError):
            await bus.wait_for("user.", timeout=1)


# ------------------------------------------------------- the fixtures, end to end
INNER_TESTS = '''
import asyncio, pytest

HANDLED = []

async def test_async_leaves_pending_events(aperion_bus, event_recorder):
    async def slow(e):
        await asyncio.sleep(0.1)
        HANDLED.append(e.payload["n"])

    aperion_bus.on("a.b", slow)
    for n in range(3):
        aperion_bus.publish_nowait("a.b", {"n": n})
    await asyncio.sleep(0)

async def test_async_bus_fixture_directly(aperion_async_bus):
    def sync_slow(e):
        import time
        time.sleep(0.05)
        HANDLED.append(e.payload["n"])

    aperion_async_bus.on("c.d", sync_slow)
    aperion_async_bus.publish_nowait("c.d", {"n": 3})

def test_pending_events_were_drained_at_teardown():
    assert HANDLED == [0, 1, 2, 3]

def test_sync_fixture(aperion_bus, event_recorder):
    aperion_bus.emit("s.t", {"k": 1})
    event_recorder.wait_for_sync("s.t")
    event_recorder.assert_published("s.t", k=1)
'''


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_fixtures_drain_async_tests_in_their_loop(pytester: pytest.Pytester, mode: str) -> None:
    """In an async test, the bus is closed in the test's loop with ``await
    bus.close()``: events still pending when the test returns are handled, not
    cancelled (no handler failure, no "Task was destroyed" warning)."""
    body = INNER_TESTS
    if mode == "strict":  # strict mode needs the marker on async tests
        body = body.replace("async def test_", "@pytest.mark.asyncio\nasync def test_")
    pytester.makepyfile(test_inner=body)
    pytester.makeini(
        f"[pytest]\nasyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-W", "error")
    result.assert_outcomes(passed=4)
    output = result.stdout.str() + result.stderr.str()
    assert "CancelledError" not in output and "destroyed" not in output
