"""DeadLetterQueue: 1.x API, fixed retry semantics, eviction, JSONL persistence, export."""

from __future__ import annotations

import importlib
import io
import json
import logging
import os
import re
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aperion_event_bus.dlq import (
    DeadLetterQueue,
    DLQBackend,
    FailedEvent,
    FailureReason,
    JSONLDLQBackend,
    MemoryDLQBackend,
)
from aperion_event_bus.errors import ConfigurationError, EventBusError, ValidationError
from aperion_event_bus.events import Event

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


class FakeRedactor:
    def redact_string(self, value: str) -> str:
        return EMAIL.sub("[REDACTED_EMAIL]", value)

    def redact(self, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                k: "[REDACTED]" if "password" in str(k).lower() else self.redact(v)
                for k, v in data.items()
            }
        if isinstance(data, (list, tuple)):
            return [self.redact(v) for v in data]
        if isinstance(data, str):
            return self.redact_string(data)
        return data


class FakeBus:
    """Implements the bus-side contract: retry_delivery(event, *, subscription_id, handler_name)."""

    def __init__(self, outcomes: list[Any] | None = None) -> None:
        self.outcomes = list(outcomes or [])
        self.calls: list[tuple[str, str | None, str | None]] = []

    def retry_delivery(
        self,
        event: Event,
        *,
        subscription_id: str | None = None,
        handler_name: str | None = None,
    ) -> bool:
        self.calls.append((event.event_id, subscription_id, handler_name))
        outcome = self.outcomes.pop(0) if self.outcomes else True
        if isinstance(outcome, BaseException):
            raise outcome
        return bool(outcome)


def ev(i: int = 0, event_type: str = "order.created", **payload: Any) -> Event:
    return Event(event_type, {"i": i, **payload}, source="shop")


def add(dlq: DeadLetterQueue, i: int = 0, **kwargs: Any) -> str:
    kwargs.setdefault("reason", FailureReason.HANDLER_ERROR)
    kwargs.setdefault("error", "ValueError: boom")
    event_type = kwargs.pop("event_type", "order.created")
    return dlq.add(ev(i, event_type), **kwargs)


# ---------------------------------------------------------------- 1.x API


def test_failure_reason_values() -> None:
    assert {r.name: r.value for r in FailureReason} == {
        "HANDLER_ERROR": "handler_error",
        "HANDLER_TIMEOUT": "handler_timeout",
        "ALL_HANDLERS_FAILED": "all_handlers_failed",
        "VALIDATION_ERROR": "validation_error",
        "SERIALIZATION_ERROR": "serialization_error",
    }
    assert FailureReason("handler_timeout") is FailureReason.HANDLER_TIMEOUT
    assert FailureReason.HANDLER_ERROR == "handler_error"


def test_add_get_and_listing_newest_first() -> None:
    dlq = DeadLetterQueue()
    ids = [add(dlq, i) for i in range(5)]
    assert all(i.startswith("dlq_") for i in ids)
    assert len(set(ids)) == 5
    entry = dlq.get(ids[2])
    assert entry is not None
    assert entry.event.payload["i"] == 2
    assert entry.reason is FailureReason.HANDLER_ERROR
    assert entry.error == "ValueError: boom"
    assert entry.retry_count == 0
    assert abs(entry.timestamp - time.time()) < 5
    assert [e.id for e in dlq.get_all()] == ids[::-1]
    assert [e.id for e in dlq.get_all(limit=2)] == ids[:-3:-1]
    assert dlq.size() == len(dlq) == 5
    assert dlq.get("dlq_missing") is None


def test_filters_by_event_type_and_reason() -> None:
    dlq = DeadLetterQueue()
    a = add(dlq, 1, event_type="order.created")
    b = add(dlq, 2, event_type="user.deleted", reason="handler_timeout")
    c = add(dlq, 3, event_type="order.created", reason=FailureReason.HANDLER_TIMEOUT)
    assert [e.id for e in dlq.get_by_event_type("order.created")] == [c, a]
    assert [e.id for e in dlq.get_by_reason(FailureReason.HANDLER_TIMEOUT)] == [c, b]
    assert [e.id for e in dlq.get_by_reason("handler_error")] == [a]
    assert dlq.get_by_event_type("nothing.here") == []


def test_add_accepts_exceptions_metadata_and_subscription() -> None:
    dlq = DeadLetterQueue()
    meta = {"attempt": 1}
    entry_id = dlq.add(
        ev(),
        FailureReason.HANDLER_ERROR,
        KeyError("sku"),
        handler_name="charge_card",
        metadata=meta,
        subscription_id="sub_1",
        subscription_name="billing",
    )
    meta["attempt"] = 99  # the caller's dict is copied
    entry = dlq.get(entry_id)
    assert entry is not None
    assert entry.error == "KeyError: 'sku'"
    assert entry.handler_name == "charge_card"
    assert entry.metadata == {
        "attempt": 1,
        "subscription_id": "sub_1",
        "subscription_name": "billing",
    }


def test_unknown_reason_is_rejected() -> None:
    with pytest.raises(ValidationError, match="handler_error"):
        DeadLetterQueue().add(ev(), "exploded", "x")


def test_entries_returned_are_copies() -> None:
    dlq = DeadLetterQueue()
    entry_id = add(dlq)
    entry = dlq.get(entry_id)
    assert entry is not None
    entry.metadata["x"] = 1
    entry.retry_count = 42
    again = dlq.get(entry_id)
    assert again is not None
    assert again.metadata == {} and again.retry_count == 0


def test_remove_clear_and_clear_older_than() -> None:
    dlq = DeadLetterQueue()
    ids = [add(dlq, i) for i in range(4)]
    assert dlq.remove(ids[0]) is True
    assert dlq.remove(ids[0]) is False
    old = dlq.backend.get(ids[1])
    assert old is not None
    old.timestamp = time.time() - 3 * 3600
    dlq.backend.update(old)
    assert dlq.clear_older_than(hours=2) == 1
    assert dlq.clear_older_than() == 0
    assert [e.id for e in dlq.get_all()] == [ids[3], ids[2]]
    assert dlq.clear() == 2
    assert dlq.size() == 0


def test_failed_event_dict_round_trip() -> None:
    event = Event("a.b", {"nested": {"x": [1, 2]}}, source="s", correlation_id="c")
    entry = FailedEvent("dlq_1", event, "handler_error", "err", "h", 12.5, 2, {"k": "v"})
    assert entry.reason is FailureReason.HANDLER_ERROR
    data = entry.to_dict()
    assert data["reason"] == "handler_error"
    assert data["event"]["event_id"] == event.event_id
    assert json.loads(json.dumps(data)) == data
    assert FailedEvent.from_dict(json.loads(json.dumps(data))) == entry
    with pytest.raises(ValidationError, match="missing"):
        FailedEvent.from_dict({"id": "x"})


def test_stats() -> None:
    dlq = DeadLetterQueue(max_size=50)
    empty = dlq.get_stats()
    assert empty["size"] == 0
    assert empty["oldest_timestamp"] is None and empty["newest_timestamp"] is None
    add(dlq, 1, event_type="a.b")
    add(dlq, 2, event_type="a.b", reason="handler_timeout")
    add(dlq, 3, event_type="c.d")
    stats = dlq.get_stats()
    assert stats["size"] == 3
    assert stats["max_size"] == 50
    assert stats["by_reason"] == {"handler_error": 2, "handler_timeout": 1}
    assert stats["by_event_type"] == {"a.b": 2, "c.d": 1}
    assert stats["oldest_timestamp"] <= stats["newest_timestamp"]
    assert stats["evicted"] == 0


# ---------------------------------------------------------------- eviction


def test_max_size_evicts_oldest_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    dlq = DeadLetterQueue(max_size=3)
    with caplog.at_level(logging.WARNING, logger="aperion_event_bus.dlq"):
        ids = [add(dlq, i) for i in range(5)]
    assert dlq.size() == 3
    assert [e.id for e in dlq.get_all()] == ids[:1:-1]
    assert dlq.get(ids[0]) is None
    assert dlq.get_stats()["evicted"] == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert ids[0] in warnings[0].getMessage()


def test_invalid_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        DeadLetterQueue(max_size=0)
    with pytest.raises(ConfigurationError):
        DeadLetterQueue(persist_path=tmp_path / "d.jsonl", backend=MemoryDLQBackend())


def test_concurrent_adds_respect_max_size() -> None:
    dlq = DeadLetterQueue(max_size=100)

    def worker() -> None:
        for i in range(200):
            add(dlq, i)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dlq.size() == 100
    assert dlq.get_stats()["evicted"] == 1100


# ---------------------------------------------------------------- retry


def test_retry_success_removes_and_targets_only_the_failed_handler() -> None:
    dlq = DeadLetterQueue()
    entry_id = dlq.add(
        ev(),
        FailureReason.HANDLER_ERROR,
        "boom",
        handler_name="send_mail",
        metadata={"subscription_id": "sub_7", "subscription_name": "mailer"},
    )
    bus = FakeBus([True])
    assert dlq.retry(entry_id, bus) is True
    entry_event = bus.calls[0][0]
    assert bus.calls == [(entry_event, "sub_7", "send_mail")]
    assert dlq.get(entry_id) is None


def test_retry_uses_subscription_name_when_handler_name_missing() -> None:
    dlq = DeadLetterQueue()
    entry_id = dlq.add(ev(), "handler_error", "boom", subscription_name="mailer")
    bus = FakeBus([True])
    dlq.retry(entry_id, bus)
    assert bus.calls[0][1:] == (None, "mailer")


def test_retry_passes_name_and_patterns_to_a_bus_that_takes_them() -> None:
    dlq = DeadLetterQueue()
    entry_id = dlq.add(
        ev(),
        "handler_error",
        "boom",
        handler_name="send_mail",
        metadata={"subscription_patterns": ["order.*"]},
        subscription_id="sub_7",
        subscription_name="mailer",
    )
    seen: list[dict[str, Any]] = []

    class NewBus:
        def retry_delivery(self, event: Event, **hints: Any) -> bool:
            seen.append(hints)
            return False

    class TwoKeywordBus(FakeBus):  # the original contract: still called without them
        pass

    assert dlq.retry(entry_id, NewBus()) is False
    assert seen == [
        {
            "subscription_id": "sub_7",
            "handler_name": "send_mail",
            "subscription_name": "mailer",
            "patterns": ["order.*"],
        }
    ]
    old_bus = TwoKeywordBus([True])
    assert dlq.retry(entry_id, old_bus) is True
    assert old_bus.calls[0][1:] == ("sub_7", "send_mail")


def test_retry_success_can_keep_the_entry() -> None:
    dlq = DeadLetterQueue()
    entry_id = add(dlq, handler_name="h")
    assert dlq.retry(entry_id, FakeBus([True]), remove_on_success=False) is True
    entry = dlq.get(entry_id)
    assert entry is not None
    assert entry.retry_count == 1
    assert entry.metadata["last_retry_succeeded"] is True
    assert entry.error == "ValueError: boom"


def test_retry_failure_returns_false_and_counts() -> None:
    dlq = DeadLetterQueue()
    entry_id = add(dlq, handler_name="h")
    bus = FakeBus([False, RuntimeError("still broken"), False])
    assert dlq.retry(entry_id, bus) is False
    entry = dlq.get(entry_id)
    assert entry is not None and entry.retry_count == 1
    assert entry.error == "ValueError: boom"  # the bus gave no new error text
    assert dlq.retry(entry_id, bus) is False
    entry = dlq.get(entry_id)
    assert entry is not None and entry.retry_count == 2
    assert entry.error == "RuntimeError: still broken"
    assert entry.metadata["last_retry_succeeded"] is False
    assert dlq.retry(entry_id, bus) is False
    entry = dlq.get(entry_id)
    assert entry is not None and entry.retry_count == 3
    assert entry.id == entry_id and dlq.size() == 1  # the same entry, not a new one


def test_retry_reads_a_rich_result() -> None:
    class Result:
        success = False
        error = TimeoutError("took too long")

    class RichBus(FakeBus):
        def retry_delivery(self, event: Event, **kwargs: Any) -> Any:  # type: ignore[override]
            return Result()

    dlq = DeadLetterQueue()
    entry_id = add(dlq, handler_name="h")
    assert dlq.retry(entry_id, RichBus()) is False
    entry = dlq.get(entry_id)
    assert entry is not None and entry.error == "TimeoutError: took too long"


def test_retry_unknown_id_and_bus_without_contract() -> None:
    dlq = DeadLetterQueue()
    assert dlq.retry("dlq_missing", FakeBus()) is False
    entry_id = add(dlq)
    with pytest.raises(ConfigurationError, match="retry_delivery"):
        dlq.retry(entry_id, object())


def test_retry_all_respects_max_retries() -> None:
    dlq = DeadLetterQueue()
    always_fails = add(dlq, 1, handler_name="h1")
    recovers = add(dlq, 2, handler_name="h2")

    class Bus(FakeBus):
        def retry_delivery(self, event: Event, **kwargs: Any) -> bool:  # type: ignore[override]
            super().retry_delivery(event, **kwargs)
            return kwargs["handler_name"] == "h2"

    bus = Bus()
    assert dlq.retry_all(bus, max_retries=2) == {always_fails: False, recovers: True}
    assert dlq.retry_all(bus, max_retries=2) == {always_fails: False}
    assert dlq.retry_all(bus, max_retries=2) == {}  # retry_count reached max_retries
    entry = dlq.get(always_fails)
    assert entry is not None and entry.retry_count == 2
    assert len(bus.calls) == 3


def test_retry_all_keeps_successes_when_asked() -> None:
    dlq = DeadLetterQueue()
    ids = [add(dlq, i) for i in range(3)]
    results = dlq.retry_all(FakeBus(), max_retries=1, remove_on_success=False)
    assert list(results) == ids  # oldest first
    assert all(results.values())
    assert dlq.retry_all(FakeBus(), max_retries=1) == {}


def test_same_entry_is_not_retried_twice_at_once() -> None:
    dlq = DeadLetterQueue()
    entry_id = add(dlq)
    started, release = threading.Event(), threading.Event()

    class SlowBus(FakeBus):
        def retry_delivery(self, event: Event, **kwargs: Any) -> bool:  # type: ignore[override]
            started.set()
            release.wait(5)
            return False

    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(dlq.retry(entry_id, SlowBus())))
    worker.start()
    assert started.wait(5)
    assert dlq.retry(entry_id, FakeBus([True])) is False  # already in flight
    release.set()
    worker.join()
    assert results == [False]
    entry = dlq.get(entry_id)
    assert entry is not None and entry.retry_count == 1


def test_handler_may_add_to_the_dlq_during_retry() -> None:
    dlq = DeadLetterQueue()
    entry_id = add(dlq)

    class ReentrantBus(FakeBus):
        def retry_delivery(self, event: Event, **kwargs: Any) -> bool:  # type: ignore[override]
            dlq.add(event, FailureReason.HANDLER_ERROR, "from inside")
            return False

    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(dlq.retry(entry_id, ReentrantBus())))
    t.start()
    t.join(5)
    assert done == [False]
    assert dlq.size() == 2


def test_entry_removed_during_retry_is_not_resurrected() -> None:
    dlq = DeadLetterQueue()
    entry_id = add(dlq)

    class ClearingBus(FakeBus):
        def retry_delivery(self, event: Event, **kwargs: Any) -> bool:  # type: ignore[override]
            dlq.clear()
            return False

    assert dlq.retry(entry_id, ClearingBus()) is False
    assert dlq.size() == 0


async def test_aretry_calls_a_sync_only_bus_in_a_worker_thread() -> None:
    dlq = DeadLetterQueue()
    entry_id = add(dlq, handler_name="h", subscription_id="sub_1")
    threads: list[int] = []

    class ThreadBus(FakeBus):
        def retry_delivery(self, event: Event, **kwargs: Any) -> bool:  # type: ignore[override]
            threads.append(threading.get_ident())
            return super().retry_delivery(event, **kwargs)

    bus = ThreadBus([False, True])
    assert await dlq.aretry(entry_id, bus) is False
    entry = dlq.get(entry_id)
    assert entry is not None and entry.retry_count == 1
    assert await dlq.aretry(entry_id, bus) is True
    assert dlq.size() == 0
    assert [c[1:] for c in bus.calls] == [("sub_1", "h"), ("sub_1", "h")]
    assert threading.get_ident() not in threads


async def test_aretry_awaits_an_async_bus_and_records_what_it_raised(tmp_path: Path) -> None:
    dlq = DeadLetterQueue(persist_path=tmp_path / "dead.jsonl")
    entry_id = add(dlq, handler_name="h")

    class AsyncBus:
        async def aretry_delivery(self, event: Event, **kwargs: Any) -> bool:
            raise RuntimeError("bus said no")

    assert await dlq.aretry(entry_id, AsyncBus()) is False
    entry = DeadLetterQueue(persist_path=tmp_path / "dead.jsonl").get(entry_id)
    assert entry is not None and entry.retry_count == 1
    assert entry.error == "RuntimeError: bus said no"
    with pytest.raises(ConfigurationError, match="retry_delivery"):
        await dlq.aretry(entry_id, object())


async def test_sync_retry_refuses_to_block_a_running_loop() -> None:
    dlq = DeadLetterQueue()
    entry_id = add(dlq)
    bus = FakeBus()
    with pytest.raises(EventBusError, match="aretry"):
        dlq.retry(entry_id, bus)
    with pytest.raises(EventBusError, match="aretry_all"):
        dlq.retry_all(bus)
    assert bus.calls == []


# ---------------------------------------------------------------- persistence


def test_persist_path_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "dlq" / "dead.jsonl"
    first = DeadLetterQueue(persist_path=path)
    a = first.add(ev(1, when="now"), "handler_error", "e1", handler_name="h", metadata={"k": [1]})
    b = add(first, 2, reason="handler_timeout")
    c = add(first, 3)
    first.remove(c)
    first.retry(a, FakeBus([False]))

    second = DeadLetterQueue(persist_path=path)
    assert [e.id for e in second.get_all()] == [b, a]
    entry_a = second.get(a)
    original = first.get(a)
    assert entry_a == original
    assert entry_a is not None and entry_a.retry_count == 1
    assert entry_a.metadata["k"] == [1]
    assert entry_a.event.payload["when"] == "now"
    assert second.get_stats()["by_reason"] == {"handler_error": 1, "handler_timeout": 1}
    assert second.clear() == 2
    assert DeadLetterQueue(persist_path=path).size() == 0


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_persist_file_is_0600(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "dead.jsonl"
        add(DeadLetterQueue(persist_path=path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_persist_survives_torn_and_foreign_lines(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    first = DeadLetterQueue(persist_path=path)
    ids = [add(first, i) for i in range(3)]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("not json at all\n")
        fh.write('{"op": "put", "entry": {"id": "torn"')  # crash mid-write
    second = DeadLetterQueue(persist_path=path)
    assert [e.id for e in second.get_all()] == ids[::-1]
    assert second.get_stats()["persist_skipped_lines"] == 2
    new_id = add(second, 9)
    third = DeadLetterQueue(persist_path=path)
    assert [e.id for e in third.get_all()] == [new_id, *ids[::-1]]


def test_persist_clear_older_than_and_compaction(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    dlq = DeadLetterQueue(persist_path=path)
    keep = add(dlq, 0)
    for i in range(1200):  # many dead journal lines trigger a compaction
        dlq.remove(add(dlq, i))
    assert len(path.read_text().splitlines()) < 1200
    backend = dlq.backend
    assert isinstance(backend, JSONLDLQBackend)
    entry = backend.get(keep)
    assert entry is not None
    entry.timestamp -= 48 * 3600
    backend.update(entry)
    fresh = add(dlq, 1)
    assert dlq.clear_older_than(hours=24) == 1
    assert [e.id for e in DeadLetterQueue(persist_path=path).get_all()] == [fresh]


def test_foreign_persist_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my shopping list\nmilk\n")
    with pytest.raises(ConfigurationError, match=re.escape(str(path))):
        DeadLetterQueue(persist_path=path)
    assert path.read_text() == "my shopping list\nmilk\n"


def test_journal_with_only_a_torn_line_opens(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    path.write_text('{"op": "put", "entry": {"id": "dl')
    dlq = DeadLetterQueue(persist_path=path)
    assert dlq.size() == 0
    entry_id = add(dlq)
    assert [e.id for e in DeadLetterQueue(persist_path=path).get_all()] == [entry_id]


def test_persisted_entries_beyond_max_size_are_evicted_on_open(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    big = DeadLetterQueue(persist_path=path)
    ids = [add(big, i) for i in range(5)]
    small = DeadLetterQueue(max_size=2, persist_path=path)
    assert [e.id for e in small.get_all()] == ids[:2:-1]
    assert small.get_stats()["evicted"] == 3


def test_backends_implement_the_protocol(tmp_path: Path) -> None:
    assert isinstance(MemoryDLQBackend(), DLQBackend)
    assert isinstance(JSONLDLQBackend(tmp_path / "d.jsonl"), DLQBackend)


@pytest.mark.parametrize("kind", ["memory", "jsonl"])
def test_backend_contract(kind: str, tmp_path: Path) -> None:
    backend: DLQBackend = (
        MemoryDLQBackend() if kind == "memory" else JSONLDLQBackend(tmp_path / "d.jsonl")
    )
    e1 = FailedEvent("dlq_1", ev(1, "a.b"), FailureReason.HANDLER_ERROR, "x", timestamp=10.0)
    e2 = FailedEvent("dlq_2", ev(2, "c.d"), FailureReason.HANDLER_TIMEOUT, "y", timestamp=20.0)
    backend.put(e1)
    backend.put(e2)
    assert backend.size() == 2
    assert [e.id for e in backend.list()] == ["dlq_2", "dlq_1"]
    assert [e.id for e in backend.list(limit=1)] == ["dlq_2"]
    assert [e.id for e in backend.list(event_type="a.b")] == ["dlq_1"]
    assert [e.id for e in backend.list(reason="handler_timeout")] == ["dlq_2"]
    oldest = backend.oldest()
    assert oldest is not None and oldest.id == "dlq_1"
    e1.retry_count = 5
    backend.update(e1)
    got = backend.get("dlq_1")
    assert got is not None and got.retry_count == 5
    assert [e.id for e in backend.list()] == ["dlq_2", "dlq_1"]  # update keeps the position
    backend.update(FailedEvent("dlq_9", ev(), FailureReason.HANDLER_ERROR, "z"))
    assert backend.get("dlq_9") is None  # update never inserts
    assert backend.clear_older_than(15.0) == 1
    assert backend.remove("dlq_2") is True
    assert backend.remove("dlq_2") is False
    assert backend.oldest() is None
    backend.put(e1)
    assert backend.clear() == 1
    assert backend.size() == 0


def test_custom_backend_is_used() -> None:
    backend = MemoryDLQBackend()
    dlq = DeadLetterQueue(backend=backend)
    entry_id = add(dlq)
    assert backend.get(entry_id) is not None
    assert dlq.get_stats()["backend"] == "MemoryDLQBackend"


# ---------------------------------------------------------------- export


def _dlq_with_secrets() -> DeadLetterQueue:
    dlq = DeadLetterQueue()
    dlq.add(
        Event("user.created", {"email_addr": "bob@example.com", "password": "hunter2"}, source="s"),
        FailureReason.HANDLER_ERROR,
        "ValueError: bad address bob@example.com",
        handler_name="welcome",
        metadata={"password": "hunter2", "subscription_id": "sub_1"},
    )
    add(dlq, 2)
    return dlq


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_export_to_path_is_redacted_and_0600(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    assert _dlq_with_secrets().export(path, redactor=FakeRedactor()) == 2
    text = path.read_text()
    assert "bob@example.com" not in text and "hunter2" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first, second = (json.loads(line) for line in text.splitlines())  # oldest first
    assert first["event"]["payload"] == {"email_addr": "[REDACTED_EMAIL]", "password": "[REDACTED]"}
    assert first["error"] == "ValueError: bad address [REDACTED_EMAIL]"
    assert first["metadata"] == {"password": "[REDACTED]", "subscription_id": "sub_1"}
    assert first["handler_name"] == "welcome"
    assert second["event"]["payload"] == {"i": 2}


def test_export_to_text_and_binary_files() -> None:
    dlq = _dlq_with_secrets()
    text_out, bin_out = io.StringIO(), io.BytesIO()
    assert dlq.export(text_out, redactor=FakeRedactor(), limit=1) == 1
    assert dlq.export(bin_out, redactor=FakeRedactor()) == 2
    assert len(text_out.getvalue().splitlines()) == 1
    assert b"bob@example.com" not in bin_out.getvalue()
    assert len(bin_out.getvalue().splitlines()) == 2


def test_export_fallback_for_unserialisable_values() -> None:
    dlq = DeadLetterQueue()

    class Opaque:
        def __repr__(self) -> str:
            return "Opaque(bob@example.com)"

    dlq.add(ev(), "handler_error", "e", metadata={"obj": Opaque()})
    out = io.StringIO()
    assert dlq.export(out, redactor=FakeRedactor()) == 1
    record = json.loads(out.getvalue())
    assert "bob@example.com" not in out.getvalue()
    assert record["metadata"] == {"_unserialisable": "metadata omitted"}
    assert "_unserialisable" in record["event"]["payload"]


def test_export_with_real_redactor_by_default(tmp_path: Path) -> None:
    try:
        importlib.import_module("aperion_event_bus.redaction").Redactor  # noqa: B018
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"aperion_event_bus.redaction.Redactor not available yet: {exc}")
    path = tmp_path / "export.jsonl"
    _dlq_with_secrets().export(path)
    text = path.read_text()
    assert "bob@example.com" not in text
    assert "hunter2" not in text


def test_export_without_redaction_engine_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aperion_event_bus.redaction", None)
    with pytest.raises(ConfigurationError, match="redactor="):
        _dlq_with_secrets().export(io.StringIO())
