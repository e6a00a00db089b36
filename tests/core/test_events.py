"""Envelope: immutability, read-only payloads, ids, serialisation."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import pickle
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aperion_event_bus import Event, EventBus, SerializationError, ValidationError
from aperion_event_bus._ids import new_event_id


def test_event_is_immutable_and_payload_read_only() -> None:
    original = {"user": {"id": 1, "tags": ["a"]}}
    event = Event("user.created", original)
    with pytest.raises(AttributeError):
        event.event_type = "x.y"  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        event.payload["user"] = 2
    with pytest.raises(TypeError):
        event.payload["user"]["tags"].append("b")
    original["user"]["tags"].append("mutated")  # the publisher's later change
    assert event.payload["user"]["tags"] == ["a"]
    assert isinstance(event.payload, dict)
    assert copy.deepcopy(event.payload) == {"user": {"id": 1, "tags": ["a"]}}
    assert type(copy.deepcopy(event.payload)) is dict


def test_1x_positional_signature_and_defaults() -> None:
    event = Event("a.b", {"x": 1}, 123.5, "evt_custom", "svc", "cid")
    assert (event.timestamp, event.event_id, event.source, event.correlation_id) == (
        123.5,
        "evt_custom",
        "svc",
        "cid",
    )
    fresh = Event("a.b", {})
    assert fresh.event_id.startswith("evt_")
    assert fresh.causation_id is None and fresh.traceparent is None


def test_to_jsonl_key_order_and_roundtrip() -> None:
    event = Event("a.b", {"x": 1}, 1.0, "evt_1", "src", "cid", causation_id="evt_0")
    line = event.to_jsonl()
    assert "\n" not in line
    keys = list(json.loads(line))
    assert keys[:6] == ["event_type", "payload", "timestamp", "event_id", "source", "correlation_id"]
    assert Event.from_jsonl(line) == event


def test_from_jsonl_requires_first_four_keys() -> None:
    with pytest.raises(ValidationError, match="timestamp"):
        Event.from_jsonl('{"event_type": "a.b", "payload": {}, "event_id": "evt_1"}')
    minimal = Event.from_jsonl('{"event_type":"a.b","payload":{},"timestamp":1,"event_id":"e"}')
    assert minimal.source is None and minimal.correlation_id is None


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_non_json_values_serialise_in_documented_forms() -> None:
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    event = Event(
        "a.b",
        {
            "when": when,
            "day": dt.date(2024, 5, 1),
            "id": uid,
            "price": decimal.Decimal("9.99"),
            "tags": {"b", "a"},
            "raw": b"\x00\x01",
            "color": Color.RED,
            "point": Point(1, 2),
            "by_color": {Color.RED: 1, Level.HIGH: 2},
            "by_id": {uid: "x"},
        },
    )
    data = json.loads(event.to_jsonl())["payload"]
    assert data["when"].startswith("2024-05-01T12:00:00")
    assert data["day"] == "2024-05-01"
    assert data["id"] == str(uid)
    assert data["price"] == "9.99"
    assert data["tags"] == ["a", "b"]
    assert data["raw"] == "AAE="
    assert data["color"] == "red"
    assert data["point"] == {"x": 1, "y": 2}
    # Enum keys are written as their value, UUID keys as their string
    assert data["by_color"] == {"red": 1, "3": 2}
    assert data["by_id"] == {str(uid): "x"}
    # handlers see the real objects (dataclasses become read-only dicts, keys are kept)
    assert event.payload["when"] == when and event.payload["point"] == {"x": 1, "y": 2}
    assert event.payload["by_color"][Color.RED] == 1 and event.payload["by_id"][uid] == "x"


class Level(enum.Enum):
    HIGH = 3


class Opaque(enum.Enum):
    A = object()
    PAIR = (1, 2)


def _strict_json(line: str) -> object:
    def refuse(word: str) -> object:
        raise ValueError(f"not JSON: {word}")

    return json.loads(line, parse_constant=refuse)


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"x": float("nan")}, "payload['x']"),
        ({"x": [1.0, float("inf")]}, "payload['x'][1]"),
        ({"deep": {"y": -float("inf")}}, "payload['deep']['y']"),
        ({"p": Point(1, float("nan"))}, "payload['p']['y']"),  # type: ignore[arg-type]
        ({"e": Opaque.A}, "payload['e'].value"),
        ({"e": [Opaque.PAIR, Opaque.A]}, "payload['e'][1].value"),
        ({Opaque.PAIR: 1}, "payload[<Opaque.PAIR: (1, 2)>]"),
        ({"in": {Opaque.A: 1}}, "payload['in']"),
        ({(1, 2): 1}, "payload[(1, 2)]"),
    ],
)
def test_values_json_cannot_carry_fail_at_publish_naming_the_path(
    payload: dict, path: str
) -> None:
    """NaN, infinities, an Enum whose value JSON cannot write and a key JSON cannot
    name are refused when the event is made, on every publish path, never later in
    to_jsonl, the audit log or the store."""
    with pytest.raises(SerializationError) as err:
        Event("a.b", payload)
    assert err.value.path.startswith(path) and path in str(err.value)
    bus = EventBus()
    try:
        with pytest.raises(SerializationError):
            bus.emit("a.b", payload)
        with pytest.raises(SerializationError):
            bus.emit("a.b", payload, wait_for_handlers=True)
    finally:
        bus.shutdown(1)


async def test_values_json_cannot_carry_fail_in_async_publish() -> None:
    async with EventBus() as bus:
        bus.on("a.b", lambda e: None)
        for payload in ({"x": float("nan")}, {"x": 1, "y": float("inf")}, {"e": Opaque.A}):
            with pytest.raises(SerializationError, match="payload"):
                bus.publish_nowait("a.b", payload)
            with pytest.raises(SerializationError, match="payload"):
                await bus.publish("a.b", payload)
        assert bus.get_stats()["events_published"] == 0


def test_old_lines_with_nan_are_read_as_written() -> None:
    """1.x wrote NaN/Infinity into its audit lines; from_jsonl still reads them."""
    line = '{"event_type":"a.b","payload":{"x":NaN,"y":[Infinity]},"timestamp":1,"event_id":"e"}'
    event = Event.from_jsonl(line)
    assert math.isnan(event.payload["x"]) and event.payload["y"] == [float("inf")]
    with pytest.raises(TypeError):
        event.payload["y"].append(1)
    with pytest.raises(SerializationError, match=r"builtins\.object"):  # others still fail
        Event.from_dict({"event_type": "a.b", "payload": {"o": object()}, "timestamp": 1, "event_id": "e"})


hashable_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=6) | st.floats()
key_values = st.sampled_from([*Color, *Level, *Opaque]) | st.uuids() | hashable_scalars
payload_values = st.recursive(
    hashable_scalars
    | st.uuids()
    | st.sampled_from([*Color, *Level, *Opaque])
    | st.decimals(allow_nan=False)
    | st.datetimes()
    | st.binary(max_size=4),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(key_values, children, max_size=3)
    | st.frozensets(hashable_scalars, max_size=3),
    max_leaves=12,
)


@given(payload=st.dictionaries(key_values, payload_values, max_size=4))
def test_publish_refuses_or_to_jsonl_writes_strict_json(payload: dict) -> None:
    """For any payload: either the event is refused at publish with SerializationError,
    or its line is strict JSON (no NaN/Infinity) that reads back as an Event."""
    try:
        event = Event("a.b", payload)
    except SerializationError as exc:
        assert exc.path.startswith("payload")
        return
    line = event.to_jsonl()
    assert isinstance(_strict_json(line), dict)
    assert Event.from_jsonl(line).event_id == event.event_id


def test_pydantic_model_value_is_serialised() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Address(pydantic.BaseModel):
        city: str

    event = Event("a.b", {"address": Address(city="Oslo")})
    assert json.loads(event.to_jsonl())["payload"]["address"] == {"city": "Oslo"}


def test_unserialisable_value_fails_at_publish_with_path() -> None:
    class Opaque:
        pass

    with pytest.raises(SerializationError, match=r"payload\['items'\]\[1\]"):
        Event("a.b", {"items": [1, Opaque()]})
    bus = EventBus()
    try:
        with pytest.raises(SerializationError, match="Opaque"):
            bus.emit("a.b", {"x": Opaque()})
    finally:
        bus.shutdown(1)


def test_pickle_and_copy_keep_equality() -> None:
    event = Event("a.b", {"n": [1, 2]}, correlation_id="c")
    assert pickle.loads(pickle.dumps(event)) == event
    assert copy.copy(event) is event
    assert event.replace(source="x").source == "x"
    with pytest.raises(TypeError, match="unknown"):
        event.replace(nope=1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_timestamp_is_rejected_at_construction(bad: float) -> None:
    """JSON cannot carry NaN/Infinity: such an event could be neither stored nor
    exported, so it is refused up front with a message naming the field."""
    with pytest.raises(ValidationError, match="timestamp must be a finite number"):
        Event("x.y", {}, timestamp=bad)
    with pytest.raises(ValidationError, match="timestamp"):
        Event("x.y", {}).replace(timestamp=bad)
    with pytest.raises(ValidationError, match="timestamp"):
        Event.from_dict({"event_type": "x.y", "payload": {}, "timestamp": bad, "event_id": "evt_1"})


def test_ids_unique_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(i.startswith("evt_") for i in ids[:10])


def test_ids_from_many_threads_are_unique_and_ordered_per_thread() -> None:
    """The cached millisecond/counter head is shared by threads: ids stay unique and
    each thread's ids sort in creation order, across head refreshes (every 256 ids)."""
    import threading

    per_thread: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        for _ in range(20_000):
            out.append(new_event_id())

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [i for ids in per_thread for i in ids]
    assert len(set(flat)) == len(flat)
    for ids in per_thread:
        assert ids == sorted(ids)


def test_event_id_layout_matches_generic_ids() -> None:
    """``evt_`` + 11 hex digits of Unix milliseconds + 8 of counter + 12 of node."""
    import time

    from aperion_event_bus._ids import event_id_at, new_id

    now = time.time()
    fast, generic = event_id_at(now), new_id("evt_")
    assert len(fast) == len(generic) == 4 + 11 + 8 + 12
    assert fast[-12:] == generic[-12:]  # same process node
    assert abs(int(fast[4:15], 16) - int(now * 1000)) <= 1
    assert int(fast[15:23], 16) + 1 == int(generic[15:23], 16)  # one shared counter


def test_two_buses_publishing_in_same_millisecond_never_share_ids() -> None:
    a, b = EventBus(), EventBus()
    try:
        ids = []
        for _ in range(2000):
            ids.append(a.emit("x.y", {}))
            ids.append(b.emit("x.y", {}))
        assert len(set(ids)) == len(ids)
    finally:
        a.shutdown(1)
        b.shutdown(1)


def test_ids_unique_across_processes() -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        batches = pool.map(_make_ids, [2000, 2000])
    batches.append(_make_ids(2000))
    flat = [i for batch in batches for i in batch]
    assert len(set(flat)) == len(flat)


def _make_ids(n: int) -> list[str]:
    return [new_event_id() for _ in range(n)]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text() | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(
    event_type=st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){1,3}", fullmatch=True),
    payload=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
    source=st.none() | st.text(max_size=20),
    correlation_id=st.none() | st.text(max_size=40),
)
def test_jsonl_roundtrip_property(
    event_type: str, payload: dict, source: str | None, correlation_id: str | None
) -> None:
    event = Event(event_type, payload, source=source, correlation_id=correlation_id)
    back = Event.from_jsonl(event.to_jsonl())
    assert back == event
    assert back.to_jsonl() == event.to_jsonl()


@given(value=json_values | st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_dumps_matches_json_dumps(value: object) -> None:
    """Without orjson, ``dumps`` drives the C encoder itself: same text as ``json.dumps``."""
    from aperion_event_bus import _json

    if not hasattr(_json, "_stdlib_dumps"):
        pytest.skip("orjson is installed; dumps uses it")
    assert _json.dumps(value) == _json._stdlib_dumps(value)
