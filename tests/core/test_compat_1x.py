"""1.x behaviours kept: from_jsonl's KeyError, wait_for_pending's count, blank types."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from aperion_event_bus import Event, EventBus, MissingFieldError, ValidationError


@pytest.mark.parametrize(
    ("line", "missing"),
    [
        ('{"event_type":"a.b","payload":{}}', "timestamp"),
        ('{"payload":{},"timestamp":1,"event_id":"e"}', "event_type"),
        ('{"event_type":"a.b","payload":{},"timestamp":1}', "event_id"),
    ],
)
def test_from_jsonl_missing_key_is_a_key_error_and_a_validation_error(
    line: str, missing: str
) -> None:
    """1.x raised KeyError; 2.x code catches ValidationError: one error is both."""
    with pytest.raises(KeyError) as as_key:
        Event.from_jsonl(line)
    with pytest.raises(ValidationError) as as_validation:
        Event.from_jsonl(line)
    for err in (as_key.value, as_validation.value):
        assert isinstance(err, MissingFieldError) and isinstance(err, ValueError)
        assert err.field == missing
        assert str(err).startswith("event record is missing required field(s)")  # not quoted
        assert missing in str(err)


def _gated_bus(n: int) -> tuple[EventBus, threading.Event]:
    gate = threading.Event()
    bus = EventBus(handler_timeout=5)
    bus.subscribe(lambda e: gate.wait(5), "g.x")
    for i in range(n):
        bus.emit("g.x", {"i": i})
    deadline = time.monotonic() + 5
    while bus.get_pending_count() != n and time.monotonic() < deadline:
        time.sleep(0.001)
    assert bus.get_pending_count() == n
    return bus, gate


def test_wait_for_pending_returns_how_many_pending_events_finished() -> None:
    """1.x: ``await wait_for_pending(timeout)`` returns the number completed."""
    bus, gate = _gated_bus(3)
    try:
        threading.Timer(0.05, gate.set).start()
        assert asyncio.run(bus.wait_for_pending(5)) == 3
        assert bus.get_pending_count() == 0
        assert asyncio.run(bus.wait_for_pending(1)) == 0  # nothing pending: 0 at once
    finally:
        gate.set()
        bus.shutdown(2)


def test_wait_for_pending_that_times_out_counts_only_what_finished() -> None:
    bus, gate = _gated_bus(2)
    try:
        assert asyncio.run(bus.wait_for_pending(0.05)) == 0
        assert bus.get_pending_count() == 2
    finally:
        gate.set()
        bus.shutdown(2)


BLANK = ["   ", "\t", " \n ", "\u2003"]


@pytest.mark.parametrize("blank", BLANK)
def test_whitespace_only_event_type_is_rejected_by_emit(blank: str) -> None:
    bus = EventBus()
    try:
        bus.subscribe(lambda e: None, "*")
        for wait in (False, True):
            with pytest.raises(ValueError, match="event_type must be a non-empty string"):
                bus.emit(blank, {}, wait_for_handlers=wait)
        assert bus.get_stats()["events_published"] == 0
    finally:
        bus.shutdown(1)


@pytest.mark.parametrize("blank", BLANK)
@pytest.mark.parametrize("subscribed", [False, True])
async def test_whitespace_only_event_type_is_rejected_by_every_async_path(
    blank: str, subscribed: bool
) -> None:
    """publish, publish_nowait (the C hot path too) and Event objects; the check runs
    on the match cache's miss, before the event is counted as published."""
    async with EventBus() as bus:
        if subscribed:
            bus.on("*", lambda e: None)
        with pytest.raises(ValidationError, match="non-empty string"):
            await bus.publish(blank, {})
        for _ in range(2):  # never cached: the second call is refused too
            with pytest.raises(ValidationError, match="non-empty string"):
                bus.publish_nowait(blank, {})
        with pytest.raises(ValidationError, match="non-empty string"):
            bus.publish_nowait(blank, {"x": [1]})  # the Python path
        assert bus.get_stats()["events_published"] == 0
        with pytest.raises(ValidationError, match="non-empty string"):
            Event(blank, {})
        assert bus.publish_nowait("a.b", {}) is not None
        assert bus.get_stats()["events_published"] == 1


def test_dataclasses_functions_work_on_event_as_in_1x() -> None:
    """1.x Event was a frozen dataclass: fields, replace, asdict and astuple work."""
    import dataclasses

    from aperion_event_bus._frozen import FrozenDict

    event = Event("a.b", {"x": [1]}, source="s", causation_id="evt_0", traceparent="tp")
    assert dataclasses.is_dataclass(event)
    names = [f.name for f in dataclasses.fields(event)]
    assert names == [
        "event_type",
        "payload",
        "timestamp",
        "event_id",
        "source",
        "correlation_id",
        "causation_id",
        "traceparent",
        "tracestate",
    ]
    changed = dataclasses.replace(event, payload={"y": [2]}, correlation_id="c")
    assert type(changed) is Event and changed.event_id == event.event_id
    assert changed.payload == {"y": [2]} and type(changed.payload) is FrozenDict
    assert (changed.causation_id, changed.traceparent, changed.source) == ("evt_0", "tp", "s")
    with pytest.raises(TypeError, match="read-only"):
        changed.payload["y"].append(3)
    data = dataclasses.asdict(event)
    assert data == event.to_dict() and list(data) == names
    assert dataclasses.astuple(event)[:2] == ("a.b", {"x": [1]})
    with pytest.raises(ValidationError):
        dataclasses.replace(event, event_type="   ")


async def test_events_built_by_every_path_are_dataclass_events() -> None:
    import dataclasses

    async with EventBus() as bus:
        bus.on("a.*", lambda e: None)
        for event in (bus.publish_nowait("a.b", {"x": 1}), (await bus.publish("a.c", {})).event):
            assert type(event) is Event
            assert dataclasses.replace(event, source="s").source == "s"
