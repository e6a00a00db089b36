"""DLQ retries against a real EventBus: the async variants (on the bus's own loop),
the sync ones refusing to block a loop, and retries that must not report their
failure as a new one."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from aperion_event_bus import DeadLetterQueue, Event, EventBus
from aperion_event_bus.errors import EventBusError


class Flaky:
    """A handler that fails until ``healthy`` and counts its calls."""

    def __init__(self) -> None:
        self.healthy = False
        self.calls = 0

    def check(self) -> None:
        self.calls += 1
        if not self.healthy:
            raise RuntimeError(f"still down (call {self.calls})")


async def test_aretry_on_the_bus_loop_has_the_semantics_of_retry() -> None:
    dlq = DeadLetterQueue()
    flaky = Flaky()
    others: list[str] = []
    async with EventBus(dead_letter_queue=dlq) as bus:

        @bus.on("job.run", priority=10)
        async def ok(e: Event) -> None:
            others.append(e.event_id)

        @bus.on("job.run", name="flaky-worker")
        async def worker(e: Event) -> None:
            await asyncio.sleep(0.001)  # suspends: the retry waits on the bus loop
            flaky.check()

        await bus.publish("job.run", {"id": 1})
        await bus.drain(5)
        [entry] = dlq.get_all()
        assert await asyncio.wait_for(dlq.aretry(entry.id, bus), 5) is False
        again = dlq.get(entry.id)
        assert again is not None and again.retry_count == 1
        assert again.metadata["last_retry_succeeded"] is False
        flaky.healthy = True
        assert await asyncio.wait_for(dlq.aretry(entry.id, bus, remove_on_success=False), 5)
        kept = dlq.get(entry.id)
        assert kept is not None and kept.retry_count == 2
        assert await asyncio.wait_for(dlq.aretry(entry.id, bus), 5) is True
        assert dlq.size() == 0
        assert await dlq.aretry(entry.id, bus) is False  # gone
    assert flaky.calls == 4  # the first delivery and three retries
    assert len(others) == 1  # only the handler that failed ran again


async def test_aretry_all_respects_max_retries_and_keeps_the_entries() -> None:
    dlq = DeadLetterQueue()
    flaky = Flaky()
    async with EventBus(dead_letter_queue=dlq) as bus:

        @bus.on("job.run")
        async def worker(e: Event) -> None:
            flaky.check()

        for i in range(2):
            await bus.publish("job.run", {"id": i})
        await bus.drain(5)
        oldest_first = [e.id for e in reversed(dlq.get_all())]
        results = await asyncio.wait_for(dlq.aretry_all(bus, max_retries=2), 5)
        assert results == dict.fromkeys(oldest_first, False)
        assert await dlq.aretry_all(bus, max_retries=2) == dict.fromkeys(oldest_first, False)
        assert await dlq.aretry_all(bus, max_retries=2) == {}  # retry_count reached 2
        assert [e.retry_count for e in dlq.get_all()] == [2, 2]
        flaky.healthy = True
        assert await dlq.aretry_all(bus, max_retries=3) == dict.fromkeys(oldest_first, True)
        assert dlq.size() == 0


async def test_sync_retry_on_a_loop_thread_raises_and_changes_nothing() -> None:
    dlq = DeadLetterQueue()
    flaky = Flaky()
    async with EventBus(dead_letter_queue=dlq) as bus:
        bus.on("job.run", lambda e: flaky.check())
        await bus.publish("job.run", {})
        await bus.drain(5)
        [entry] = dlq.get_all()
        with pytest.raises(EventBusError, match=r"event loop.*await dlq\.aretry\(entry_id, bus\)"):
            dlq.retry(entry.id, bus)
        with pytest.raises(EventBusError, match=r"await dlq\.aretry_all\(bus\)"):
            dlq.retry_all(bus)
        with pytest.raises(EventBusError, match=r"await bus\.aretry_delivery"):
            bus.retry_delivery(entry.event, subscription_id=entry.metadata["subscription_id"])
        same = dlq.get(entry.id)
        assert same is not None and same.retry_count == 0
        assert flaky.calls == 1  # the handler did not run again

        # from a plain thread, while the loop runs, the sync API keeps working
        flaky.healthy = True
        assert await asyncio.to_thread(dlq.retry, entry.id, bus) is True
        assert flaky.calls == 2 and dlq.size() == 0


async def test_aretry_of_a_cancelled_caller_still_records_the_outcome() -> None:
    dlq = DeadLetterQueue()
    started = asyncio.Event()
    calls = 0
    async with EventBus(dead_letter_queue=dlq) as bus:

        @bus.on("job.run")
        async def worker(e: Event) -> None:
            nonlocal calls
            calls += 1
            if calls > 1:  # the retry: still failing, slowly
                started.set()
                await asyncio.sleep(0.1)
            raise RuntimeError(f"failure {calls}")

        await bus.publish("job.run", {})
        await bus.drain(5)
        [entry] = dlq.get_all()
        task = asyncio.ensure_future(dlq.aretry(entry.id, bus))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        kept = dlq.get(entry.id)
        for _ in range(250):
            if kept is not None and kept.retry_count:
                break
            await asyncio.sleep(0.02)
            kept = dlq.get(entry.id)
        assert kept is not None and kept.retry_count == 1
        assert kept.metadata["last_retry_succeeded"] is False


def test_a_retry_queued_behind_busy_lanes_is_not_reported_as_a_new_failure() -> None:
    dlq = DeadLetterQueue()
    bus = EventBus(dead_letter_queue=dlq)
    reports: list[Any] = []
    release = threading.Event()
    running = threading.Event()
    flaky = Flaky()

    def worker(e: Event) -> None:
        if e.payload.get("block"):
            running.set()
            release.wait(5)
            return
        flaky.check()

    bus.on("job.run", worker, name="worker")
    bus.on("system.handler_error", lambda e: reports.append(e.payload["original_event_id"]))
    try:
        bus.emit("job.run", {}, wait_for_handlers=True)
        [entry] = dlq.get_all()
        bus.emit("job.run", {"block": True})  # holds the worker's lane
        assert running.wait(5)
        outcome: list[bool] = []
        retry = threading.Thread(target=lambda: outcome.append(dlq.retry(entry.id, bus)))
        retry.start()
        retry.join(0.2)
        assert retry.is_alive()  # queued behind the running delivery, in order
        release.set()
        retry.join(5)
        assert outcome == [False] and flaky.calls == 2
    finally:
        release.set()
        bus.shutdown(5)
    [same] = dlq.get_all()  # no second entry for the retry's failure
    assert same.id == entry.id and same.retry_count == 1
    assert reports == [entry.event.event_id]  # one system.handler_error: the first failure


# ------------------------------------------------- which handler, after a restart


class Forwarder:
    """Instances of one class share a handler name: the collision a restart exposes."""

    def __init__(self, target: str, calls: list[tuple[str, str]], fail: bool = False) -> None:
        self.target, self.calls, self.fail = target, calls, fail

    def __call__(self, e: Event) -> None:
        self.calls.append((self.target, e.event_type))
        if self.fail:
            raise RuntimeError(f"{self.target} is down")


def _retry_after_restart(subscribe: Any) -> tuple[bool, list[tuple[str, str]], Any]:
    """Run 1: ``subscribe(bus, calls, fail=True)``, publish user.created (crm fails),
    stop. Run 2: a new bus (new subscription ids), the same subscriptions, healthy:
    retry the entry. Returns the retry's result, the calls of run 2, the entry."""
    dlq = DeadLetterQueue()
    first = EventBus(dead_letter_queue=dlq)
    subscribe(first, [], True)
    first.emit("user.created", {"u": 1}, wait_for_handlers=True)
    first.shutdown(5)
    [entry] = dlq.get_all()
    calls: list[tuple[str, str]] = []
    restarted = EventBus(dead_letter_queue=dlq)
    subscribe(restarted, calls, False)
    try:
        ok = dlq.retry(entry.id, restarted)
    finally:
        restarted.shutdown(5)
    return ok, calls, dlq.get(entry.id)


def test_after_a_restart_retry_skips_a_same_named_handler_of_another_event_type() -> None:
    def subscribe(bus: EventBus, calls: list[Any], fail: bool) -> None:
        bus.subscribe(Forwarder("crm", calls, fail), "user.created")
        bus.subscribe(Forwarder("billing", calls), "order.paid")

    ok, calls, _ = _retry_after_restart(subscribe)
    assert ok is True
    assert calls == [("crm", "user.created")]  # billing (order.paid) was not called


def test_after_a_restart_patterns_tell_same_named_handlers_apart() -> None:
    def subscribe(bus: EventBus, calls: list[Any], fail: bool) -> None:
        bus.subscribe(Forwarder("audit", calls), "user.*")
        bus.subscribe(Forwarder("crm", calls, fail), "user.created")

    ok, calls, _ = _retry_after_restart(subscribe)
    assert ok is True
    assert calls == [("crm", "user.created")]


def test_after_a_restart_an_ambiguous_retry_runs_nothing_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def subscribe(bus: EventBus, calls: list[Any], fail: bool) -> None:
        bus.subscribe(Forwarder("crm", calls, fail), "user.created")
        bus.subscribe(Forwarder("mailer", calls), "user.created")

    ok, calls, entry = _retry_after_restart(subscribe)
    assert ok is False
    assert calls == []  # neither candidate ran
    assert entry is not None and entry.retry_count == 1
    assert "2 live subscriptions could be the one that failed" in caplog.text
    assert "name=" in caplog.text


async def test_after_a_restart_a_named_subscription_is_found_by_its_name() -> None:
    dlq = DeadLetterQueue()
    calls: list[tuple[str, str]] = []
    async with EventBus(dead_letter_queue=dlq) as bus:
        bus.on("user.created", Forwarder("crm", calls, True), name="crm")
        bus.on("user.created", Forwarder("mailer", calls), name="mailer")
        await bus.publish("user.created", {})
        await bus.drain(5)
    [entry] = dlq.get_all()
    assert entry.metadata["subscription_name"] == "crm"
    assert entry.metadata["subscription_patterns"] == ["user.created"]
    calls.clear()
    async with EventBus(dead_letter_queue=dlq) as restarted:
        restarted.on("user.created", Forwarder("mailer", calls), name="mailer")
        restarted.on("user.created", Forwarder("crm", calls), name="crm")
        assert await dlq.aretry(entry.id, restarted) is True
    assert calls == [("crm", "user.created")]


def test_entries_without_the_new_fields_still_load_and_retry() -> None:
    from aperion_event_bus.dlq import FailedEvent

    calls: list[tuple[str, str]] = []
    old = {  # a 1.x / early 2.x entry: no subscription_patterns, no name
        "id": "dlq_old",
        "event": Event("user.created", {"u": 1}).to_dict(),
        "reason": "handler_error",
        "error": "RuntimeError: crm is down",
        "handler_name": f"{__name__}.Forwarder",
        "timestamp": 1.0,
        "retry_count": 0,
        "metadata": {"subscription_id": "sub_gone"},
    }
    dlq = DeadLetterQueue()
    dlq.backend.put(FailedEvent.from_dict(old))
    bus = EventBus(dead_letter_queue=dlq)
    bus.subscribe(Forwarder("crm", calls), "user.created")
    bus.subscribe(Forwarder("billing", calls), "order.paid")
    try:
        assert dlq.retry("dlq_old", bus) is True
    finally:
        bus.shutdown(5)
    assert calls == [("crm", "user.created")]
