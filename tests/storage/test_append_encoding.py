"""How appends are shipped to SQLite: bodies stored byte for byte, non-finite floats,
unstorable strings, and pending deliveries on both the seq-range and the lookup path."""

from __future__ import annotations

import asyncio
import datetime as _dt
import enum
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aperion_event_bus._accel import speedups
from aperion_event_bus.errors import SerializationError
from aperion_event_bus.events import Event
from aperion_event_bus.storage.sqlite import SQLiteStore

TRICKY: list[dict[str, object]] = [
    {"text": 'quote " backslash \\ slash / tab \t newline \n nul \x00 bell \x07'},
    {"unicode": "æøå 日本 🎉 \u2028 \u2029", "key é": "v"},
    {"ints": [0, -1, 2**53 + 1, 2**63 - 1, -(2**63), 2**70]},
    {"floats": [0.0, -0.0, 1e-7, 1.5e300, 0.1, 123456789.123456789, -2.5e-308]},
    {"nested": {"a": [], "b": {}, "c": [[{}]], "d": None, "e": True, "f": False}},
    {"script": "</script><!-- ]]>"},
    {},
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "events.db").open()
    yield s
    s.close()


def as_read(event_type: str, payload: dict[str, Any], **fields: Any) -> Event:
    """The event as read back from a record written before publish refused NaN and
    infinities (``Event.from_dict`` reads those as written): the store still meets them."""
    record = Event(event_type, {}, **fields).to_dict()
    return Event.from_dict({**record, "payload": payload})


def rows(store: SQLiteStore) -> list[tuple[str, str, float, str | None, int, str]]:
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute(
            "SELECT event_id, event_type, timestamp, correlation_id, size, body "
            "FROM events ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


def pending(store: SQLiteStore, name: str) -> list[str]:
    return [e.event_id for e, _ in store.pending_deliveries(name)]


@pytest.mark.parametrize("nonfinite", [False, True])
async def test_bodies_are_stored_exactly_as_to_jsonl(store: SQLiteStore, nonfinite: bool) -> None:
    payloads = list(TRICKY)
    if nonfinite:  # shipped the other way: one NaN in the run switches the whole run
        payloads.append({"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf")})
    events = [as_read("data.stored", p, correlation_id=f"c{i}") for i, p in enumerate(payloads)]
    await asyncio.gather(*(store.append(e, ["a"]) for e in events))
    stored = rows(store)
    assert [r[0] for r in stored] == [e.event_id for e in events]  # publish order
    for event, (eid, etype, ts, corr, size, body) in zip(events, stored, strict=True):
        assert body == event.to_jsonl()
        assert size == len(body.encode("utf-8"))
        assert (eid, etype, ts, corr) == (
            event.event_id,
            event.event_type,
            event.timestamp,
            event.correlation_id,
        )
    assert pending(store, "a") == [e.event_id for e in events]
    back = store.get_event(events[-1].event_id)
    assert back is not None and back.to_jsonl() == events[-1].to_jsonl()


class _Tag(str):
    pass


ENVELOPES: list[dict[str, object]] = [
    {},
    {
        "source": "billing \u2028 \"svc\"",
        "correlation_id": "corr-1",
        "causation_id": "evt_parent",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
    },
    {"timestamp": 0.1},
    {"timestamp": 1e22},  # repr 1e+22
    {"timestamp": 5e-324},
    {"source": _Tag("a str subclass")},
]  # (NaN and infinite timestamps are refused by Event itself: ValidationError)


@pytest.mark.parametrize("fields", ENVELOPES)
def test_envelopes_are_written_exactly_as_dumps_writes_them(fields: dict[str, object]) -> None:
    from aperion_event_bus.storage._append import _encode

    events = [Event("data.stored", p, **fields) for p in TRICKY]  # type: ignore[arg-type]
    assert _encode(events) == "[" + ",".join(e.to_jsonl() for e in events) + "]"


async def test_odd_envelope_fields_are_stored_exactly_as_to_jsonl(store: SQLiteStore) -> None:
    events = [Event("data.stored", {"i": i}, **f) for i, f in enumerate(ENVELOPES)]  # type: ignore[arg-type]
    await store.append_many(events, ["a"])
    assert [r[5] for r in rows(store)] == [e.to_jsonl() for e in events]


async def test_a_string_that_only_mentions_nan_is_stored_too(store: SQLiteStore) -> None:
    event = Event("data.stored", {"word": "NaN and Infinity are just words here"})
    await store.append(event, ["a"])
    assert rows(store)[0][5] == event.to_jsonl()


async def test_an_unstorable_string_fails_only_its_own_append(store: SQLiteStore) -> None:
    good, bad = Event("data.stored", {"n": 1}), Event("data.stored", {"s": "\ud800"})
    results = await asyncio.gather(
        store.append(good, ["a"]), store.append(bad, ["a"]), return_exceptions=True
    )
    assert results[0] is None and isinstance(results[1], SerializationError)
    assert pending(store, "a") == [good.event_id]


async def test_deliveries_when_names_differ_or_ids_repeat(store: SQLiteStore) -> None:
    first = Event("order.paid", {"n": 0})
    await store.append(first, ["a"])
    store.ack_sync(first.event_id, "a")
    events = [Event("order.paid", {"n": i}) for i in range(1, 6)]
    # one batch: the same names, but one id is already stored (lookup path) ...
    await asyncio.gather(
        store.append(first, ["a", "b"]), *(store.append(e, ["a", "b"]) for e in events)
    )
    assert pending(store, "a") == [first.event_id] + [e.event_id for e in events]
    assert pending(store, "b") == [first.event_id] + [e.event_id for e in events]
    # ... and one batch where the ops name different subscriptions (or none)
    more = [Event("order.paid", {"n": i}) for i in range(10, 14)]
    await asyncio.gather(
        store.append(more[0], ["a"]),
        store.append(more[1], []),
        store.append(more[2], ["b", "c"]),
        store.append_many(more[3:], ["c"]),
    )
    assert pending(store, "a")[-1] == more[0].event_id
    assert pending(store, "b")[-1] == more[2].event_id
    assert pending(store, "c") == [more[2].event_id, more[3].event_id]
    assert store.count_events() == 10


async def test_a_run_of_new_events_gets_its_deliveries_from_the_seq_range(
    store: SQLiteStore,
) -> None:
    await store.append(Event("order.paid", {"n": -1}))  # seq 1 has no delivery
    events = [Event("order.paid", {"n": i}) for i in range(300)]
    await asyncio.gather(*(store.append(e, ["a", "b"]) for e in events))
    await store.append_many(events[:3], ["a", "b"])  # duplicates only: nothing new
    for name in ("a", "b"):
        assert pending(store, name) == [e.event_id for e in events]
    assert store.pending_count() == 600


def test_acks_and_attempts_look_deliveries_up_by_their_whole_key(store: SQLiteStore) -> None:
    """Not by name alone: that would scan every pending row of the name per ack."""
    from aperion_event_bus.storage import _ops

    conn = sqlite3.connect(store.path)
    try:
        for statement in (_ops._DELETE_DELIVERIES, _ops._BUMP_ATTEMPTS):
            plan = " | ".join(
                row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, ("a", "[]"))
            )
            assert "PRIMARY KEY (name=? AND seq=?)" in plan, plan
    finally:
        conn.close()


def _joined(events: list[Event]) -> str:
    return "[" + ",".join(e.to_jsonl() for e in events) + "]"


@pytest.mark.parametrize(
    "payload",
    [
        {"nan": float("nan")},
        {"deep": [{"x": [1, float("inf")]}]},
        {"ninf": -float("inf"), "s": "text"},
    ],
)
def test_a_non_finite_payload_float_is_encoded_by_dumps_and_flagged(payload: dict[str, object]) -> None:
    """The constant-key writer refuses non-finite floats anywhere in a payload (its
    text then never needs the NaN scan); the run's text is ``dumps``', flagged as
    possibly holding NaN/Infinity, and stored through the row path."""
    from aperion_event_bus.storage._append import encode_checked

    events = [Event("data.stored", {"n": 1}), as_read("data.stored", payload)]
    text, finite = encode_checked(events)
    assert text == _joined(events) and finite is False
    text, finite = encode_checked(events[:1])
    assert text == _joined(events[:1]) and finite is True


class _Color(enum.Enum):
    NOW = _dt.datetime(2026, 12, 4, 12, 30, tzinfo=_dt.UTC)
    ID = uuid.UUID(int=7)
    NAN = float("nan")
    LOOP = [1]  # noqa: RUF012 (made to hold itself below)


_Color.LOOP.value.append(_Color.LOOP)


def test_default_hook_results_go_through_the_hook_again() -> None:
    """An Enum's value is itself a non-JSON value: the hook runs on what it returned."""
    from aperion_event_bus.storage._append import encode_checked

    events = [Event("data.stored", {"when": _Color.NOW, "id": _Color.ID, "e": "é"})]
    text, finite = encode_checked(events)
    assert text == _joined(events) and finite is True
    assert '"when":"2026-12-04T12:30:00+00:00"' in text


def test_correlation_id_equal_to_the_event_id_and_non_ascii_fields() -> None:
    from aperion_event_bus.storage._append import _encode

    base = Event("data.stored", {"k": "v"}, source="søurce ✓", causation_id="ça")
    events = [
        base.replace(correlation_id=base.event_id),  # the same object: escaped once
        base.replace(correlation_id="".join(list(base.event_id))),  # equal, not the same
        base.replace(correlation_id="other", event_id='evt "quoted" ü'),
        base.replace(event_type="data.ünïcode"),
        base.replace(event_type="data.ünïcode", event_id="evt_2"),
    ]
    assert _encode(events) == _joined(events)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"payload": {"s": "\udfff"}}, "payload['s']"),
        ({"payload": {"key \ud800": 1}}, "payload (a key)"),
        ({"payload": {"nested": ["ok", {"x": "\ud83d"}]}}, "payload['nested'][1]['x']"),
        ({"payload": {"nan": float("nan"), "s": "\ud800"}}, "payload['s']"),  # dumps path too
        ({"source": "\ud800"}, "source"),
        ({"event_id": "evt_\udc00"}, "event_id"),
    ],
)
def test_a_lone_surrogate_anywhere_is_refused(fields: dict[str, object], path: str) -> None:
    from aperion_event_bus.storage._append import _encode

    payload = fields.pop("payload", {"n": 1})
    event = as_read("data.stored", payload, **fields)  # type: ignore[arg-type]
    with pytest.raises(SerializationError) as info:
        _encode([Event("data.stored", {"n": 0}), event])
    assert info.value.path == path
    assert info.value.__cause__ is None  # the UnicodeEncodeError holds the whole run's text
    str(info.value).encode("utf-8")  # the message itself can be logged


async def test_nan_and_recursing_payloads_fail_or_fall_back_per_append(store: SQLiteStore) -> None:
    """In one run: a payload whose hook result is NaN is stored as ``to_jsonl`` writes
    it; one whose hook result contains itself fails its own append only (publish refuses
    both; the first can be read from an older record, the second is forced in)."""
    from aperion_event_bus._frozen import FrozenDict
    from aperion_event_bus.events import _make_event

    ok = Event("data.stored", {"n": 1})
    nan = as_read("data.stored", {"c": _Color.NAN})
    loop = _make_event("data.stored", FrozenDict({"c": _Color.LOOP}), ok.timestamp, "evt_loop")
    results = await asyncio.gather(
        store.append(ok, ["a"]),
        store.append(nan, ["a"]),
        store.append(loop, ["a"]),
        return_exceptions=True,
    )
    assert results[0] is None and results[1] is None
    assert isinstance(results[2], (ValueError, RecursionError))
    assert [r[5] for r in rows(store)] == [ok.to_jsonl(), nan.to_jsonl()]
    assert '"c":NaN' in rows(store)[1][5]
    assert pending(store, "a") == [ok.event_id, nan.event_id]


def test_decode_events_freezes_payloads_and_fills_missing_fields() -> None:
    from aperion_event_bus._frozen import FrozenDict, FrozenList
    from aperion_event_bus.storage._replay import decode_event, decode_events

    nested = Event("data.stored", {"a": [1, {"b": [2]}], "c": {"d": None}}, source="s")
    flat = Event("data.stored", {"n": 1, "s": "x", "f": 0.5, "t": True})
    envelopes = [json.loads(e.to_jsonl()) for e in (nested, flat)]
    old = {"event_type": "data.stored", "payload": {}, "timestamp": 7, "event_id": "evt_old"}
    decoded = decode_events([*envelopes, old])
    assert decoded[:2] == [nested, flat]
    assert type(decoded[0].payload) is FrozenDict
    assert type(decoded[0].payload["a"]) is FrozenList
    assert type(decoded[0].payload["a"][1]) is FrozenDict
    assert type(decoded[0].payload["c"]) is FrozenDict
    assert type(decoded[1].payload) is FrozenDict
    assert decoded[2].timestamp == 7.0 and type(decoded[2].timestamp) is float
    assert decoded[2].source is None and decoded[2].tracestate is None
    assert decode_event(envelopes[1]) == flat


def test_a_replay_page_is_put_in_seq_order_if_sqlite_concatenated_out_of_order() -> None:
    """group_concat keeps the subquery's order in practice; the page does not rely on it."""
    from aperion_event_bus.storage._replay import EventQuery

    events = [Event("data.stored", {"i": i}) for i in range(4)]
    shuffled = [2, 0, 3, 1]
    bodies = ",".join(events[i].to_jsonl() for i in shuffled)
    seqs = ",".join(str(10 + i) for i in shuffled)

    class FakeConnection:
        def execute(self, sql: str, params: object) -> Any:
            class Cursor:
                def fetchone(self) -> tuple[str, str]:
                    return bodies, seqs

            return Cursor()

    page, last = EventQuery().page(FakeConnection(), 0, 100, 10)  # type: ignore[arg-type]
    assert page == events and last == 13


def test_replay_pages_keep_publish_order_and_filters(store: SQLiteStore) -> None:
    events = [
        Event("order.paid" if i % 3 else "order.refunded", {"i": i, "tags": ["a", i]})
        for i in range(25)
    ]
    store.append_many_sync(events, ["a"])
    assert list(store.iter_events(batch_size=4)) == events
    assert list(store.iter_events(types=["order.refunded"], batch_size=3)) == events[::3]
    assert list(store.iter_events(types=["*.paid"], batch_size=5)) == [
        e for i, e in enumerate(events) if i % 3
    ]


async def test_paged_reads_refuse_a_bad_batch_size_even_when_nothing_matches(
    store: SQLiteStore,
) -> None:
    """``iter_events``/``aiter_pages`` check ``batch_size`` first: a bad argument is
    reported whatever the filters (an empty result used to hide it)."""
    for batch_size in (0, -1):
        with pytest.raises(ValueError, match="batch_size must be a positive number"):
            list(store.iter_events(types=[], batch_size=batch_size))
        with pytest.raises(ValueError, match="batch_size must be a positive number"):
            async for _ in store.aiter_pages(types=[], batch_size=batch_size):
                pass
    assert list(store.iter_events(types=[])) == []


_text = st.text(st.characters(codec="utf-8"), max_size=12)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_events = st.builds(
    lambda event_type, payload, timestamp, source, correlation, causation, tp, ts: Event(
        event_type,
        payload,
        timestamp=timestamp,
        source=source,
        correlation_id=correlation,
        causation_id=causation,
        traceparent=tp,
        tracestate=ts,
    ),
    st.sampled_from(["order.paid", 'odd."type"', "t\\x", "caf\u00e9.made", "tab\t.x"]),
    st.dictionaries(_text, _json_values, max_size=4),
    st.floats(min_value=0, max_value=1e12, allow_nan=False) | st.sampled_from([0.1, 1e22, 5e-324]),
    st.none() | _text,
    st.none() | _text,
    st.none() | _text,
    st.none() | _text,
    st.none() | _text,
)


@pytest.mark.skipif(speedups is None, reason="the C accelerator is not in use")
@settings(max_examples=300, deadline=None)
@given(st.lists(_events, min_size=1, max_size=5))
def test_c_envelopes_write_the_same_text_as_the_python_twin(events: list[Event]) -> None:
    from aperion_event_bus.storage._append import _c_envelopes, _py_envelopes

    assert _c_envelopes(events) == _py_envelopes(events)
    assert _c_envelopes(events) == "[" + ",".join(e.to_jsonl() for e in events) + "]"


@pytest.mark.skipif(speedups is None, reason="the C accelerator is not in use")
@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": 1},  # an int timestamp: not written by the envelope encoders
        {"source": 5},
        {"event_type": None},
        {"payload": {"x": float("nan")}},
        {"payload": {"x": object()}},
    ],
)
def test_c_envelopes_refuse_what_the_python_twin_refuses(change: dict[str, object]) -> None:
    from aperion_event_bus.storage._append import _c_envelopes, _py_envelopes

    event = Event("order.paid", {"i": 1})
    for name, value in change.items():
        object.__setattr__(event, name, value)  # past Event's checks, as a subclass might
    with pytest.raises(Exception) as c_error:
        _c_envelopes([event])
    with pytest.raises(Exception) as py_error:
        _py_envelopes([event])
    assert type(c_error.value) is type(py_error.value)
