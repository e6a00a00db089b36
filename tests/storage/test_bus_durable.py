"""EventBus + SQLiteStore: commit before return, durable deliveries, recover, replay."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aperion_event_bus import Event, EventBus, delivery_attempt, idempotent, is_replay
from aperion_event_bus.errors import EventBusError, ValidationError
from aperion_event_bus.storage.sqlite import SQLiteStore

CHILD = Path(__file__).with_name("durable_child.py")
SRC = str(Path(__file__).resolve().parents[2] / "src")


def url(path: Path) -> str:
    return f"sqlite:///{path}"


async def test_publish_returns_after_commit(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    bus = EventBus(store=store)
    assert store.is_open
    result = await bus.publish("order.created", {"id": 1}, wait=False)
    # committed: visible to a fresh reader connection at once
    stored = store.get_event(result.event.event_id)
    assert stored is not None and stored.payload["id"] == 1
    result = await bus.publish("order.created", {"id": 2})  # no subscriber: stored anyway
    assert store.get_event(result.event.event_id) is not None
    stats = bus.get_stats()
    assert stats["store"]["events_written"] == 2
    await bus.close()
    assert not store.is_open


async def test_store_url_string(tmp_path: Path) -> None:
    bus = EventBus(store=url(tmp_path / "u.db") + "?synchronous=FULL")
    assert bus.store is not None and bus.store.synchronous == "FULL"
    await bus.publish("a.b", {})
    await bus.close()
    with SQLiteStore(tmp_path / "u.db") as store:
        assert store.count_events() == 1


async def test_failed_durable_delivery_is_redelivered_by_recover(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    bus = EventBus(store=url(db))
    calls: list[int] = []

    async def flaky(event: Event) -> None:
        calls.append(delivery_attempt())
        raise RuntimeError("boom")

    bus.on("pay.*", flaky, name="billing", durable=True)
    result = await bus.publish("pay.due", {"amount": 3})
    assert result.handler_results[0].error is not None
    assert calls == [1]
    await bus.close()

    bus2 = EventBus(store=url(db))
    seen: list[tuple[str, int, bool]] = []

    async def ok(event: Event) -> None:
        seen.append((event.event_id, delivery_attempt(), is_replay()))

    bus2.on("pay.*", ok, name="billing", durable=True)
    assert await bus2.recover() == 1
    assert seen == [(result.event.event_id, 2, False)]
    assert await bus2.recover() == 0  # acknowledged now
    await bus2.close()
    with SQLiteStore(db) as store:
        assert store.pending_count() == 0


def test_sync_handler_durable_and_recover_sync(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    bus = EventBus(store=url(db))
    attempts: list[int] = []
    fail = [True]

    def handler(event: Event) -> None:
        attempts.append(delivery_attempt())
        if fail[0]:
            raise RuntimeError("first time")

    bus.on("x.y", handler, name="sync-sub", durable=True)
    bus.emit("x.y", {"i": 1}, wait_for_handlers=True)
    bus.emit("x.y", {"i": 2})  # queued delivery, fails too
    bus.shutdown(timeout=5)

    bus2 = EventBus(store=url(db))
    fail[0] = False
    bus2.on("x.y", handler, name="sync-sub", durable=True)
    assert bus2.recover_sync(timeout=5) == 2
    assert attempts == [1, 1, 2, 2]
    assert bus2.store is not None
    bus2.store.flush_sync()  # acks are queued (ack_nowait); commit them before counting
    assert bus2.store.pending_count() == 0
    bus2.shutdown(timeout=5)


async def test_non_durable_subscriptions_are_not_tracked(tmp_path: Path) -> None:
    bus = EventBus(store=url(tmp_path / "n.db"))
    got: list[int] = []

    async def plain(event: Event) -> None:
        got.append(delivery_attempt())
        raise RuntimeError("not tracked")

    bus.on("a.*", plain, name="plain")
    await bus.publish("a.b", {})
    assert got == [1]
    assert bus.store is not None
    assert bus.store.pending_count() == 0
    assert bus.store.count_events() == 1
    assert await bus.recover() == 0
    await bus.close()


async def test_durable_subscriptions_added_or_removed_later_are_tracked(tmp_path: Path) -> None:
    bus = EventBus(store=url(tmp_path / "later.db"))

    async def fails(event: Event) -> None:
        raise RuntimeError("stays pending")

    bus.on("a.b", fails, name="first", durable=True)
    await bus.publish("a.b", {"n": 1})
    second = bus.on("a.b", fails, name="second", durable=True)
    await bus.publish("a.b", {"n": 2})
    bus.off(second)
    await bus.publish("a.b", {"n": 3})
    store = bus.store
    assert store is not None
    assert store.pending_count("first") == 3
    assert store.pending_count("second") == 1
    await bus.close()


async def test_durable_needs_name_and_store(tmp_path: Path) -> None:
    async def h(event: Event) -> None:
        pass

    bus = EventBus(store=url(tmp_path / "v.db"))
    with pytest.raises(ValidationError, match="name="):
        bus.on("a.b", h, durable=True)
    bus.on("a.b", h, name="one", durable=True)
    with pytest.raises(ValidationError, match="already exists"):
        bus.on("a.c", h, name="one", durable=True)
    assert bus.off(h) == 1  # off(handler) finds the wrapped durable handler
    await bus.close()
    plain = EventBus()
    with pytest.raises(ValidationError, match="store"):
        plain.on("a.b", h, name="x", durable=True)
    await plain.close()


async def test_nowait_and_emit_on_loop_thread_raise_clear_error(tmp_path: Path) -> None:
    bus = EventBus(store=url(tmp_path / "l.db"))
    with pytest.raises(EventBusError, match=r"await bus\.publish"):
        bus.publish_nowait("a.b", {})
    with pytest.raises(EventBusError, match=r"await bus\.publish"):
        bus.emit("a.b", {})
    assert bus.store is not None and bus.store.count_events() == 0
    await bus.close()


def test_publish_nowait_from_plain_thread_commits(tmp_path: Path) -> None:
    bus = EventBus(store=url(tmp_path / "t.db"))
    event = bus.publish_nowait("a.b", {"k": 1})
    assert event is not None
    assert bus.store is not None and bus.store.get_event(event.event_id) is not None
    bus.shutdown(timeout=5)


async def test_replay_filters_and_marks_replay(tmp_path: Path) -> None:
    bus = EventBus(store=url(tmp_path / "p.db"))
    live: list[bool] = []

    async def tracked(event: Event) -> None:
        live.append(is_replay())

    sub = bus.on("order.*", tracked, name="orders", durable=True)
    await bus.publish("order.created", {"n": 1}, correlation_id="c1")
    await bus.publish("order.paid", {"n": 2}, correlation_id="c1")
    await bus.publish("user.created", {"n": 3}, correlation_id="c2")
    await bus.publish("order.created", {"n": 4}, correlation_id="c2")
    assert live == [False, False, False]

    got: list[tuple[int, bool]] = []

    def sync_to(event: Event) -> None:
        got.append((event.payload["n"], is_replay()))

    assert await bus.replay(types=["order.created"], to=sync_to) == 2
    assert got == [(1, True), (4, True)]
    got.clear()

    async def async_to(event: Event) -> None:
        got.append((event.payload["n"], is_replay()))

    assert await bus.replay(correlation_id="c1", to=async_to) == 2
    assert got == [(1, True), (2, True)]
    # replay to a durable subscription: delivered, marked, not tracked
    assert await bus.replay(types=["order.*"], to=sub) == 3
    assert live[3:] == [True, True, True]
    assert bus.store is not None
    await bus.store.flush()
    assert bus.store.pending_count() == 0
    ids = [e.payload["n"] async for e in bus.stored_events(types=["*.created"])]
    assert ids == [1, 3, 4]
    await bus.close()


async def test_replay_to_a_subscription_delivers_only_what_it_matches(tmp_path: Path) -> None:
    """``to=Subscription``: its own patterns filter (with ``types`` too, both must
    match; also when the subscription is paused); the count is what was delivered."""
    from aperion_event_bus.subscriptions import Subscription

    store = SQLiteStore(tmp_path / "sub.db").open()
    kinds = ["order.created", "user.created", "order.paid", "user.profile.updated"]
    store.append_many_sync([Event(t, {"n": i}) for i, t in enumerate(kinds)])
    bus = EventBus(store=store)
    got: list[int] = []

    def sync_to(event: Event) -> None:
        got.append(event.payload["n"])

    async def async_to(event: Event) -> None:
        got.append(event.payload["n"])

    for handler in (sync_to, async_to):
        orders = Subscription(handler, ["order.*"], weak=False)
        assert await bus.replay(to=orders) == 2
        assert got == [0, 2]
        got.clear()
        assert await bus.replay(types=["*.created"], to=orders) == 1
        assert got == [0]
        got.clear()
        two = Subscription(handler, ["user.*.updated", "order.paid"], weak=False, active=False)
        assert await bus.replay(types=["user.*", "order.*"], to=two) == 2
        assert got == [2, 3]
        got.clear()
        assert await bus.replay(types=["user.created"], to=orders) == 0
        assert got == []
    await bus.close()


async def test_replay_over_several_pages_in_order_with_failures_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync handler gets the events of a page in one worker-thread hop, still one at
    a time and in publish order; failures are logged per event and counted."""
    import threading

    store = SQLiteStore(tmp_path / "pages.db").open()
    events = [Event("order.paid", {"n": i}) for i in range(2_345)]  # three pages
    store.append_many_sync(events)
    bus = EventBus(store=store)
    loop_thread = threading.get_ident()
    got: list[int] = []
    threads: set[int] = set()

    def sync_to(event: Event) -> None:
        assert is_replay()
        threads.add(threading.get_ident())
        got.append(event.payload["n"])
        if event.payload["n"] % 1000 == 7:
            raise RuntimeError(f"boom {event.payload['n']}")

    with caplog.at_level("WARNING", logger="aperion_event_bus.bus"):
        assert await bus.replay(to=sync_to) == len(events)
    assert got == list(range(len(events)))
    assert loop_thread not in threads
    failed = [r.getMessage() for r in caplog.records if "replay of" in r.getMessage()]
    assert len(failed) == 3 and all("RuntimeError: boom" in m for m in failed)
    assert events[7].event_id in failed[0] and events[2_007].event_id in failed[2]

    seen: list[int] = []

    async def async_to(event: Event) -> None:
        seen.append(event.payload["n"])
        if event.payload["n"] % 500 == 0:
            await asyncio.sleep(0)

    assert await bus.replay(to=async_to) == len(events)
    assert seen == list(range(len(events)))
    await bus.close()


async def test_sync_replay_context_per_event_and_retries(tmp_path: Path) -> None:
    """Each replayed event runs in its own copy of the replay context (the current
    event and correlation id are the event's; a variable set by one call is not
    seen by the next); a subscription with retries still retries a failed event."""
    import contextvars

    from aperion_event_bus.context import current_event, get_correlation_id
    from aperion_event_bus.subscriptions import Subscription

    store = SQLiteStore(tmp_path / "ctx.db").open()
    events = [Event("order.paid", {"n": i}, correlation_id=f"c{i}") for i in range(5)]
    store.append_many_sync(events)
    bus = EventBus(store=store)
    leak: contextvars.ContextVar[int] = contextvars.ContextVar("leak", default=-1)
    seen: list[tuple[str | None, str | None, int]] = []

    def plain(event: Event) -> None:
        current = current_event()
        seen.append((current and current.event_id, get_correlation_id(), leak.get()))
        leak.set(event.payload["n"])

    assert await bus.replay(to=plain) == 5
    assert seen == [(e.event_id, e.correlation_id, -1) for e in events]

    calls: list[int] = []

    def flaky(event: Event) -> None:
        calls.append(event.payload["n"])
        if calls.count(event.payload["n"]) == 1:
            raise RuntimeError("first attempt fails")

    sub = Subscription(flaky, ["*"], weak=False, retries=1, retry_backoff=0.0)
    assert await bus.replay(to=sub) == 5
    assert calls == [n for n in range(5) for _ in range(2)]
    await bus.close()


async def test_a_cancelled_sync_replay_starts_no_further_event(tmp_path: Path) -> None:
    import threading

    store = SQLiteStore(tmp_path / "cancel.db").open()
    store.append_many_sync([Event("order.paid", {"n": i}) for i in range(50)])
    bus = EventBus(store=store)
    started = threading.Event()
    release = threading.Event()
    got: list[int] = []

    def slow(event: Event) -> None:
        got.append(event.payload["n"])
        started.set()
        release.wait(5)

    task = asyncio.create_task(bus.replay(to=slow))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await asyncio.sleep(0.2)  # the worker finishes the event it is in, then stops
    assert got == [0]
    await bus.close()


async def test_idempotent_helper_skips_duplicates(tmp_path: Path) -> None:
    bus = EventBus(store=url(tmp_path / "i.db"))
    done: list[str] = []

    async def charge(event: Event) -> None:
        done.append(event.event_id)

    wrapped = idempotent(charge, maxsize=10)
    bus.on("pay.*", wrapped, name="charge", durable=True)
    result = await bus.publish("pay.due", {})
    await bus.replay(to=wrapped)  # the same event id again: skipped
    assert done == [result.event.event_id]
    assert wrapped.skipped == 1
    await bus.close()


def _wait_line(stream: Any, prefix: bytes, deadline: float) -> bytes:
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        if line.startswith(prefix):
            return bytes(line)
    raise AssertionError(f"child never printed {prefix!r}")


async def test_handler_killed_mid_work_gets_the_event_again(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    env = dict(os.environ, PYTHONPATH=SRC)
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    try:
        deadline = time.monotonic() + 8.0
        published = _wait_line(child.stdout, b"PUBLISHED", deadline).split()[1].decode()
        started = _wait_line(child.stdout, b"STARTED", deadline).split()[1].decode()
        assert started == published
    finally:
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=5)
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]

    bus = EventBus(store=url(db))
    got: list[tuple[str, int]] = []

    async def worker(event: Event) -> None:
        got.append((event.event_id, delivery_attempt()))

    bus.on("job.run", worker, name="worker", durable=True)
    assert await asyncio.wait_for(bus.recover(), 5) == 1
    assert got == [(published, 2)]  # attempt 1 was recorded before the kill
    await bus.close()


def test_dead_letter_queue_true_persists_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "dlq.db"
    bus = EventBus(store=SQLiteStore(path), dead_letter_queue=True)

    def broken(e: Event) -> None:
        raise RuntimeError("nope")

    bus.subscribe(broken, "pay.x")
    bus.emit("pay.x", {"n": 1}, wait_for_handlers=True)
    assert bus.dead_letter_queue.size() == 1
    bus.shutdown(2)
    # a new process (here: a new bus) sees the entry: the DLQ lives in the store
    again = EventBus(store=SQLiteStore(path), dead_letter_queue=True)
    [entry] = again.dead_letter_queue.get_all()
    assert entry.event.payload["n"] == 1 and "nope" in entry.error
    again.shutdown(2)
    memory_only = EventBus(dead_letter_queue=True)
    assert memory_only.dead_letter_queue.size() == 0
    memory_only.shutdown(1)


async def test_trace_context_survives_a_store_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from aperion_event_bus import EventTracer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    path = tmp_path / "traced.db"

    first = EventBus(store=url(path), tracing=EventTracer(provider))

    @first.on("trip.booked", name="ticketing", durable=True)
    async def crashes(e: Event) -> None:
        raise RuntimeError("printer on fire")

    result = await first.publish("trip.booked", {"id": 1})
    await first.close()

    second = EventBus(store=url(path), tracing=EventTracer(provider))
    seen: list[Event] = []

    @second.on("trip.booked", name="ticketing", durable=True)
    async def works(e: Event) -> None:
        seen.append(e)

    assert await second.recover() == 1
    await second.close()
    assert seen[0].traceparent == result.event.traceparent
    producer_span_id = int(result.event.traceparent.split("-")[2], 16)
    trace_id = int(result.event.traceparent.split("-")[1], 16)
    consumers = [s for s in exporter.get_finished_spans() if s.name == "process trip.booked"]
    assert len(consumers) == 2  # the failed attempt and the redelivery
    for span in consumers:
        assert span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == producer_span_id
