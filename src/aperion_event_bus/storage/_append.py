"""The append handler: a run of appends in (normally) two statements.

Each event is encoded once, by ``Event.to_jsonl()``, and the run is shipped to
SQLite as one JSON array of those bodies (joined, not re-encoded): SQLite reads
the indexed columns out of each body and stores the body's text as it is. The
size column is the body's length in UTF-8 bytes, computed by SQLite.

``json.dumps`` writes non-finite floats as ``NaN``/``Infinity``, which SQLite's
JSON parser rejects; a run containing those words (rare, and a false alarm when a
string merely contains them) ships each body as a JSON string with its columns
instead, the way every run was shipped before.

Pending deliveries: the events of one statement get consecutive ``seq`` values, so
when every event was new (none ignored as a duplicate id) and all ops of the run
name the same subscriptions, the rows are generated from the ``seq`` range;
otherwise each (event id, name) pair is looked up through the event id index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .._json import dumps
from ..events import Event

__all__ = ["append"]

_INSERT_BODIES = (
    "INSERT OR IGNORE INTO events(event_id, event_type, timestamp, correlation_id, size, body) "
    "SELECT json_extract(value, '$.event_id'), json_extract(value, '$.event_type'), "
    "json_extract(value, '$.timestamp'), json_extract(value, '$.correlation_id'), "
    "length(CAST(value AS BLOB)), value "
    "FROM json_each(?)"  # json_each yields array order: seq follows the batch order
)
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


def _bodies(events: Sequence[Event]) -> list[str]:
    """The JSON line of each event; raises if one cannot be encoded or stored."""
    bodies = [event.to_jsonl() for event in events]
    for body in bodies:
        if not body.isascii():
            body.encode("utf-8")  # a lone surrogate cannot be stored: fail this op only
    return bodies


def append(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    """``runs``: ``(events, durable_names)`` per op; one insert for all events of the run."""
    bodies: list[str] = []
    kept: list[tuple[Sequence[Event], tuple[str, ...]]] = []
    results: list[Any] = []
    for events, names in runs:
        try:
            bodies.extend(_bodies(events))
        except Exception as exc:  # this op only: its payload cannot be encoded
            results.append(exc)
            continue
        kept.append((events, names))
        results.append(None)
    if not bodies:
        return results
    text = "[" + ",".join(bodies) + "]"
    if _UNSAFE[0] in text or _UNSAFE[1] in text:
        rows = [
            (e.event_id, e.event_type, e.timestamp, e.correlation_id, len(b.encode("utf-8")), b)
            for e, b in zip((e for events, _ in kept for e in events), bodies, strict=True)
        ]
        cur = conn.execute(_INSERT_ROWS, (dumps(rows),))
    else:
        cur = conn.execute(_INSERT_BODIES, (text,))
    names = kept[0][1]
    uniform = all(op_names == names for _, op_names in kept)
    if uniform and not names:
        return results
    count = len(bodies)
    if uniform and cur.rowcount == count and cur.lastrowid is not None:
        last = cur.lastrowid
        conn.execute(_INSERT_RANGE, (last - count + 1, last, dumps(names)))
    else:
        pairs = [(e.event_id, name) for events, op_names in kept for e in events for name in op_names]
        if pairs:
            conn.execute(_INSERT_PAIRS, (dumps(pairs),))
    return results
