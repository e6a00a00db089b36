"""Replay page decoding: the C reader (``_speedups.decode_page``) and its Python twin
(``_replay._py_decode_page``) make the same Events from the same stored bodies, and
raise the same errors; replayed events equal what was published.

Without the accelerator ``decode_page`` is the twin, so these tests then check the
twin against ``json.loads`` + ``Event.from_dict``-style expectations only.
"""

from __future__ import annotations

import gc
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aperion_event_bus import _accel
from aperion_event_bus._frozen import FrozenDict, FrozenList
from aperion_event_bus.events import ENVELOPE_FIELDS, Event
from aperion_event_bus.storage import SQLiteStore
from aperion_event_bus.storage._replay import _py_decode_page, decode_page

needs_c = pytest.mark.skipif(not _accel.ACCELERATED, reason="C accelerator not in use")

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON cannot carry the others
    | st.text()
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_optional_text = st.none() | st.text(max_size=20)


@st.composite
def _events(draw: st.DrawFn) -> Event:
    return Event(
        draw(st.text(min_size=1, max_size=20).filter(str.strip)),  # a non-blank event type
        draw(st.dictionaries(st.text(max_size=8), _json, max_size=5)),
        draw(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)),
        draw(st.text(min_size=1, max_size=30)),
        draw(_optional_text),
        draw(_optional_text),
        causation_id=draw(_optional_text),
        traceparent=draw(_optional_text),
        tracestate=draw(_optional_text),
    )


def _shape(value: Any) -> Any:
    """Types and exact values of a decoded tree (``-0.0`` and ``0.0`` differ here)."""
    if isinstance(value, dict):
        return (type(value), [(k, _shape(v)) for k, v in value.items()])
    if isinstance(value, list):
        return (type(value), [_shape(v) for v in value])
    if isinstance(value, float):
        return (float, repr(value))
    return (type(value), value)


def _fields(event: Event) -> list[Any]:
    return [_shape(getattr(event, f)) for f in ENVELOPE_FIELDS]


def _same_as_twin(text: str) -> list[Event]:
    events = decode_page(text)
    twin = _py_decode_page(text)
    assert [_fields(e) for e in events] == [_fields(e) for e in twin]
    assert all(type(e) is Event for e in events)
    return events


def _outcome(decode: Any, text: str) -> tuple[str, str] | list[list[Any]]:
    try:
        return [_fields(e) for e in decode(text)]
    except Exception as exc:  # the kind and message of the error must match
        return (type(exc).__name__, str(exc))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_events(), min_size=1, max_size=5), st.booleans())
def test_page_round_trip(events: list[Event], ascii_escapes: bool) -> None:
    """Bodies as the store writes them (and with every non-ASCII character escaped)
    decode to the published events, exactly, as read-only containers."""
    if ascii_escapes:
        text = ",".join(json.dumps(e.to_dict(), ensure_ascii=True) for e in events)
    else:
        text = ",".join(e.to_jsonl() for e in events)
    decoded = _same_as_twin(text)
    assert decoded == events
    assert [_fields(e) for e in decoded] == [_fields(e) for e in events]


def test_whitespace_unknown_keys_duplicates_and_int_timestamps() -> None:
    base = {"event_type": "a.b", "payload": {"k": 1}, "timestamp": 5, "event_id": "evt_1"}
    spaced = json.dumps({**base, "extra": [1, {"x": None}]}, indent=2)
    duplicate = '{"event_type":"a.b","payload":{"k":1,"k":2},"timestamp":1.5,"event_id":"e","event_id":"f"}'
    reordered = '{"timestamp":2.0,"event_id":"e","payload":{},"event_type":"x.y","source":null}'
    events = _same_as_twin(f" {spaced} , {duplicate},{reordered} ")
    assert events[0].timestamp == 5.0 and type(events[0].timestamp) is float
    assert events[1].payload == {"k": 2} and events[1].event_id == "f"
    assert events[2].event_type == "x.y" and events[2].source is None


@pytest.mark.parametrize(
    "body",
    [
        '"\\ud83d\\ude00 \\ud800 x \\udc00\\ud800\\u0041 \\u00e9\\n\\t\\"\\\\\\/\\b\\f\\r"',
        '"\\ud83d"',
        '"\\ud83d\\u0041"',
        '"caf\u00e9 \U0001f600 \u4e2d"',
        "-0.0",
        "-0",
        "1e400",
        "-1e400",
        "1E+2",
        "123456789012345678",
        "-12345678901234567890123",
        "0.1",
        "NaN",
        "Infinity",
        "-Infinity",
        "[[], {}, [[1]], {\"a\": {\"b\": [true, false, null]}}]",
    ],
)
def test_payload_values_like_json_loads(body: str) -> None:
    """Escapes (surrogate pairs joined, lone surrogates kept), numbers and the
    constants json.loads accepts read as json.loads reads them."""
    text = '{"event_type":"a.b","payload":{"v":' + body + '},"timestamp":1.0,"event_id":"e"}'
    assert _outcome(decode_page, text) == _outcome(_py_decode_page, text)
    (event,) = decode_page(text)
    value, expected = event.payload["v"], json.loads(body)
    assert value == expected or (math.isnan(value) and math.isnan(expected))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[1",
        "{}",
        "{",
        '{"event_type":"a.b"}',
        '{"event_type":"a.b","payload":{},"timestamp":1.0}',
        '{"event_type":1,"payload":{},"timestamp":1.0,"event_id":"e"}',
        '{"event_type":null,"payload":{},"timestamp":1.0,"event_id":"e"}',
        '{"event_type":"a","payload":[1],"timestamp":1.0,"event_id":"e"}',
        '{"event_type":"a","payload":{},"timestamp":"1","event_id":"e"}',
        '{"event_type":"a","payload":{},"timestamp":1' + "0" * 400 + ',"event_id":"e"}',
        '{"event_type":"a","payload":{},"timestamp":NaN,"event_id":"e"}',
        '{"event_type":"a","payload":{},"timestamp":1.0,"event_id":"e","source":5}',
        '{"event\\u005ftype":"a","payload":{},"timestamp":1.0,"event_id":"e"}',
        '{"event_type":"a","payload":{"n":1' + "0" * 5000 + '},"timestamp":1.0,"event_id":"e"}',
        '{"event_type":"a","payload":{"s":"tab\there"},"timestamp":1.0,"event_id":"e"}',
        '{"event_type":"a","payload":{"s":"\\x"},"timestamp":1.0,"event_id":"e"}',
        '{"event_type":"a","payload":{"s":"\\u12"},"timestamp":1.0,"event_id":"e"}',
        '{"event_type":"a","payload":{"n":01},"timestamp":1.0,"event_id":"e"}',
        '{"event_type":"a","payload":{"n":1.},"timestamp":1.0,"event_id":"e"}',
        '{"event_type":"a","payload":{"n":-},"timestamp":1.0,"event_id":"e"}',
        '{"event_type":"a","payload":{"n":tru},"timestamp":1.0,"event_id":"e"}',
        '{"event_type":"a","payload":{"d":' + "[" * 100 + "]" * 100 + '},"timestamp":1.0,"event_id":"e"}',
        '{"event_type":"a","payload":{},"timestamp":1.0,"event_id":"e"},',
        '{"event_type":"a","payload":{},"timestamp":1.0,"event_id":"e"} x',
        '{"event_type":"a","payload":{},"timestamp":1.0,"event_id":"e",}',
        '{"event_type":"a","payload":{"a":1,},"timestamp":1.0,"event_id":"e"}',
    ],
)
def test_other_text_goes_to_the_twin(text: str) -> None:
    """Text the C reader does not take itself gives the twin's result or error."""
    assert _outcome(decode_page, text) == _outcome(_py_decode_page, text)


def test_payload_is_read_only() -> None:
    text = '{"event_type":"a","payload":{"l":[1,{"d":2}]},"timestamp":1.0,"event_id":"e"}'
    (event,) = decode_page(text)
    assert type(event.payload) is FrozenDict
    assert type(event.payload["l"]) is FrozenList
    assert type(event.payload["l"][1]) is FrozenDict
    with pytest.raises(TypeError):
        event.payload["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        event.payload["l"].append(1)
    with pytest.raises(AttributeError):
        event.event_type = "b"  # type: ignore[misc]


@needs_c
def test_value_events_are_left_to_reference_counting() -> None:
    """Events of plain values cannot be in a cycle: the GC need not track them."""
    text = ",".join(
        [
            '{"event_type":"a","payload":{"l":[1,{"d":2}],"s":"x"},"timestamp":1.0,"event_id":"e"}',
            '{"event_type":"a","payload":{},"timestamp":1.0,"event_id":"f","source":"s"}',
        ]
    )
    for event in decode_page(text):
        assert not gc.is_tracked(event)
        assert not gc.is_tracked(event.payload)
    nested = decode_page(text)[0].payload["l"]
    assert not gc.is_tracked(nested) and not gc.is_tracked(nested[1])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_events(), min_size=1, max_size=30, unique_by=lambda e: e.event_id))
def test_store_replays_what_was_published(tmp_path_factory: Any, events: list[Event]) -> None:
    """Through SQLite and back (pages of 7): equal, field by field, to the published events."""
    path = tmp_path_factory.mktemp("replay") / "events.db"
    with SQLiteStore(path) as store:
        store.append_many_sync(events)
        replayed = list(store.iter_events(batch_size=7))
    assert [_fields(e) for e in replayed] == [_fields(e) for e in events]


def test_decode_page_is_the_c_reader_when_accelerated() -> None:
    from aperion_event_bus.storage import _replay

    if _accel.speedups is None:
        assert _replay.decode_page is _replay._py_decode_page
    else:
        assert _replay.decode_page is _accel.speedups.decode_page


def test_pending_page_pairs_attempts_with_events_in_seq_order() -> None:
    """Deliveries come back as three group_concat lists (bodies, seqs, attempts); if
    SQLite ever concatenated them out of order, the rows are sorted by seq together."""
    from aperion_event_bus.storage._replay import pending_page

    events = [Event("data.stored", {"i": i}) for i in range(4)]
    shuffled = [2, 0, 3, 1]
    row = (
        ",".join(events[i].to_jsonl() for i in shuffled),
        ",".join(str(10 + i) for i in shuffled),
        ",".join(str(100 + i) for i in shuffled),
    )

    class FakeConnection:
        def execute(self, sql: str, params: object) -> Any:
            class Cursor:
                def fetchone(self) -> tuple[str, str, str]:
                    return row

            return Cursor()

    page, last = pending_page(FakeConnection(), "a", 0, 10)  # type: ignore[arg-type]
    assert page == [(e, 100 + i) for i, e in enumerate(events)] and last == 13
