"""The append handler: a run of appends in (normally) two statements.

The events of a run are encoded in one ``dumps`` call, as a JSON array of their
``to_jsonl()`` objects, and shipped to SQLite as that one text: SQLite reads the
indexed columns out of each object and stores the object's text, which is the
event's ``to_jsonl()`` line byte for byte. The size column is its length in UTF-8
bytes, computed by SQLite.

``json.dumps`` writes non-finite floats as ``NaN``/``Infinity``, which SQLite's
JSON parser rejects; a run containing those words (rare, and a false alarm when a
string merely contains them) ships each body as a JSON string with its columns
instead, the way every run was shipped before. Text from ``_envelopes`` skips that
scan: its payload encoder refuses non-finite floats (the run then goes to ``dumps``).

Pending deliveries: the events of one statement get consecutive ``seq`` values, so
when every event was new (none ignored as a duplicate id) and all ops of the run
name the same subscriptions, the rows are generated from the ``seq`` range;
otherwise each (event id, name) pair is looked up through the event id index.
"""

from __future__ import annotations

import enum
import json.encoder
import sqlite3
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any

from .._accel import speedups
from .._json import dumps, json_default, make_encoder
from ..errors import SerializationError
from ..events import ENVELOPE_FIELDS, Event

__all__ = ["append", "encode_checked", "insert_bodies_sql"]

# Each reference to json_each's ``value`` renders the object's text again (and the
# json_extract calls then parse it): six renders per event. Materialized once, the
# text is rendered once per event (a third less SQLite work per append). Both yield
# the array order, so seq follows the batch order.
def insert_bodies_sql(bodies: str) -> str:
    """The events insert from ``bodies`` (an SQL expression: ``?`` or a trigger's
    ``NEW.bodies``), a JSON array of ``to_jsonl`` objects."""
    source = (
        f"FROM (WITH b(v) AS MATERIALIZED (SELECT value FROM json_each({bodies})) SELECT v FROM b)"
        if sqlite3.sqlite_version_info >= (3, 35, 0)  # MATERIALIZED
        else f"FROM (SELECT value AS v FROM json_each({bodies}))"
    )
    return (
        "INSERT OR IGNORE INTO events(event_id, event_type, timestamp, correlation_id, size, body) "
        "SELECT json_extract(v, '$.event_id'), json_extract(v, '$.event_type'), "
        "json_extract(v, '$.timestamp'), json_extract(v, '$.correlation_id'), "
        "length(CAST(v AS BLOB)), v " + source
    )


_INSERT_BODIES = insert_bodies_sql("?")
_INSERT_ROWS = (
    "INSERT OR IGNORE INTO events(event_id, event_type, timestamp, correlation_id, size, body) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]'), "
    "json_extract(value, '$[4]'), json_extract(value, '$[5]') "
    "FROM json_each(?)"
)
# Pairs [event_id, name] -> (name, seq) through the unique event_id index.
_INSERT_PAIRS = (
    "INSERT OR IGNORE INTO deliveries(name, seq) "
    "SELECT json_extract(j.value, '$[1]'), e.seq "
    "FROM json_each(?) AS j JOIN events AS e ON e.event_id = json_extract(j.value, '$[0]')"
)
_INSERT_RANGE = (
    "WITH RECURSIVE s(seq) AS (SELECT ?1 UNION ALL SELECT seq + 1 FROM s WHERE seq < ?2) "
    "INSERT OR IGNORE INTO deliveries(name, seq) SELECT n.value, s.seq FROM s, json_each(?3) AS n"
)
_UNSAFE = ("NaN", "Infinity")


_float_repr = float.__repr__

# The payload encoder of ``_envelopes``: ``dumps``'s options, except that it refuses
# NaN and infinities (the run then goes through ``dumps`` and the ``_UNSAFE`` check,
# so text written here never needs that scan) and keeps no circular-reference
# markers (a payload is frozen, so it cannot contain itself; a ``default`` that
# keeps returning itself ends in RecursionError, and ``dumps`` reports it).
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_payload_encoder: Any = (
    None
    if make_encoder is None or _c_make_encoder is None
    else _c_make_encoder(None, json_default, encode_basestring, None, ":", ",", False, False, False)
)


def _py_envelopes(events: Sequence[Event]) -> str:
    """The array text ``dumps([e._json_fields() for e in events])`` makes, written with
    the keys as constants: only the payload goes through the JSON encoder, and the
    other fields are escaped strings, ``null`` or the float's repr (what the encoder
    writes for a finite float). A third of the encoding work per event. Raises
    (``TypeError``, ``ValueError``, ``RecursionError``) for a field it does not
    handle, and for a non-finite float anywhere: the caller then encodes the run
    with ``dumps``."""
    encode = _payload_encoder
    assert encode is not None
    join = "".join
    esc = encode_basestring
    types: dict[str, str] = {}  # escaped event types (a run mostly repeats a few)
    parts = []
    for e in events:
        ts = e.timestamp
        if type(ts) is not float or ts - ts != 0.0:  # NaN and infinities: the encoder's words
            raise ValueError("not a finite float timestamp")
        et = e.event_type
        etype = types.get(et)
        if etype is None:
            etype = types[et] = esc(et)
        eid = esc(e.event_id)
        s, c, ca, tp, tst = e.source, e.correlation_id, e.causation_id, e.traceparent, e.tracestate
        parts.append(  # _json_fields order
            f'{{"event_type":{etype},"payload":{join(encode(e.payload, 0))},'
            f'"timestamp":{_float_repr(ts)},"event_id":{eid},'
            f'"source":{"null" if s is None else esc(s)},'
            f'"correlation_id":{"null" if c is None else eid if c is e.event_id else esc(c)},'
            f'"causation_id":{"null" if ca is None else esc(ca)},'
            f'"traceparent":{"null" if tp is None else esc(tp)},'
            f'"tracestate":{"null" if tst is None else esc(tst)}}}'
        )
    return "[" + ",".join(parts) + "]"


def _c_envelopes(events: Sequence[Event]) -> str:
    """``_py_envelopes`` in C (the optional accelerator): the same text, the same errors."""
    assert speedups is not None
    return speedups.encode_envelopes(events, _payload_encoder, encode_basestring)  # type: ignore[no-any-return]


_envelopes = _py_envelopes if speedups is None else _c_envelopes


def encode_checked(events: Sequence[Event]) -> tuple[str, bool]:
    """A JSON array of the events' ``to_jsonl`` objects (``_envelopes``, or one
    ``dumps`` call), and whether it is known to hold no NaN or infinity (true for
    ``_envelopes``' text).

    Raises if one cannot be encoded, or cannot be stored: ``SerializationError``
    naming the event and where its string without a UTF-8 form (a lone
    surrogate) is."""
    text = None
    finite = False
    if _payload_encoder is not None:
        try:
            text = _envelopes(events)
            finite = True
        except Exception:
            pass  # dumps raises the real error, or handles what _envelopes does not
    if text is None:
        text = dumps([event._json_fields() for event in events])
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            # not chained: the UnicodeEncodeError holds the text of the whole run
            raise unstorable_text_error(events, exc) from None
    return text, finite


def unstorable_text_error(events: Sequence[Event], exc: UnicodeEncodeError) -> SerializationError:
    """The error for text with no UTF-8 form, naming the first event and field (or
    payload path) holding such a string. Only the failure path pays for the search."""
    for event in events:
        for field in ENVELOPE_FIELDS:
            path = _unencodable_path(getattr(event, field), field)
            if path is not None:
                return SerializationError(
                    f"event {event.event_id!r}: {path} holds a string with no UTF-8 form "
                    "(a lone surrogate such as '\\ud800', e.g. from bytes decoded with "
                    "errors='surrogateescape'), which the store cannot keep; replace it "
                    "before publishing (s.encode('utf-8', 'replace').decode())",
                    path,
                )
    return SerializationError(f"an event cannot be stored as UTF-8: {exc}")


def _unencodable_path(value: Any, path: str) -> str | None:
    """Where in ``value`` (a frozen payload or a field) a str has no UTF-8 form."""
    if isinstance(value, str):
        return None if _encodes(value) else path
    children: Any
    if isinstance(value, Mapping):
        if any(isinstance(key, str) and not _encodes(key) for key in value):
            return f"{path} (a key)"
        children = ((f"{path}[{key!r}]", item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        children = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    elif isinstance(value, (set, frozenset)):
        children = ((f"{path}{{...}}", item) for item in value)
    elif isinstance(value, enum.Enum):
        children = ((path, value.value),)
    else:
        return None
    for child_path, item in children:
        found = _unencodable_path(item, child_path)
        if found is not None:
            return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _encode(events: Sequence[Event]) -> str:
    """``encode_checked``'s text."""
    return encode_checked(events)[0]


def _encode_run(runs: list[Any], results: list[Any]) -> tuple[str, bool]:
    """The array text of every op's events (and whether it is known to hold no NaN or
    infinity); an op that cannot be encoded gets its exception in ``results`` and is
    left out (the rest of the run is stored)."""
    try:
        return encode_checked([event for events, _ in runs for event in events])
    except Exception:
        pass  # find the culprits: encode op by op
    parts: list[str] = []
    for i, (events, _) in enumerate(runs):
        try:
            parts.append(_encode(events)[1:-1])
        except Exception as exc:  # this op only: its payload cannot be encoded
            results[i] = exc
    return "[" + ",".join(part for part in parts if part) + "]", False


def append(conn: sqlite3.Connection, runs: list[Any], seqs: Any = None) -> list[Any]:
    """``runs``: ``(events, durable_names)`` per op; one insert for all events of the run.

    ``seqs`` (an ``_ops.RecentSeqs``): told the seqs of the events when they are known
    (every event new: consecutive seqs), else to forget what it knows."""
    results: list[Any] = [None] * len(runs)
    text, finite = _encode_run(runs, results)
    kept = [op for op, result in zip(runs, results, strict=True) if result is None]
    events = [event for op_events, _ in kept for event in op_events]
    if not events:
        return results
    if not finite and (_UNSAFE[0] in text or _UNSAFE[1] in text):
        bodies = [event.to_jsonl() for event in events]
        rows = [
            (e.event_id, e.event_type, e.timestamp, e.correlation_id, len(b.encode("utf-8")), b)
            for e, b in zip(events, bodies, strict=True)
        ]
        cur = conn.execute(_INSERT_ROWS, (dumps(rows),))
    else:
        cur = conn.execute(_INSERT_BODIES, (text,))
    count = len(events)
    last = cur.lastrowid if cur.rowcount == count else None  # seqs last - count + 1 .. last
    if seqs is not None:
        if last is not None:
            seqs.stage(events, last - count + 1)
        else:
            seqs.forget()
    names = kept[0][1]
    uniform = all(op_names == names for _, op_names in kept)
    if uniform and not names:
        return results
    if uniform and last is not None:
        conn.execute(_INSERT_RANGE, (last - count + 1, last, dumps(names)))
    else:
        pairs = [(e.event_id, name) for op_events, op_names in kept for e in op_events for name in op_names]
        if pairs:
            conn.execute(_INSERT_PAIRS, (dumps(pairs),))
    return results
