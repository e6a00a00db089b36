"""The write operations the writer thread runs, each a batch handler.

Every handler receives the arguments of a run of consecutive ops of its kind and
returns one result per op. Runs of appends, acks, attempts and dead-letterings
are shipped to SQLite as one JSON array and expanded with ``json_each``, so a run
costs a handful of statements however long it is (see ``_writer`` for why the
statement count matters).

Events are stored with ``INSERT OR IGNORE``: appending an event id that is
already stored keeps the first copy and only adds the new pending deliveries.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from .._json import dumps, loads

__all__ = [
    "ACK",
    "APPEND",
    "ATTEMPT",
    "DEAD",
    "DLQ_CLEAR",
    "DLQ_CLEAR_OLDER",
    "DLQ_PUT",
    "DLQ_REMOVE",
    "DLQ_UPDATE",
    "HANDLERS",
]

APPEND = "append"
ACK = "ack"
ATTEMPT = "attempt"
DEAD = "dead"
DLQ_PUT = "dlq_put"
DLQ_UPDATE = "dlq_update"
DLQ_REMOVE = "dlq_remove"
DLQ_CLEAR = "dlq_clear"
DLQ_CLEAR_OLDER = "dlq_clear_older"

_INSERT_EVENTS = (
    "INSERT OR IGNORE INTO events(event_id, event_type, timestamp, correlation_id, size, body) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]'), "
    "json_extract(value, '$[4]'), json_extract(value, '$[5]') "
    "FROM json_each(?)"  # json_each yields array order: seq follows the batch order
)
# Pairs [event_id, name] -> (name, seq) through the unique event_id index.
_PAIRS = (
    "SELECT json_extract(j.value, '$[1]') AS name, e.seq AS seq{extra} "
    "FROM json_each(?) AS j JOIN events AS e ON e.event_id = json_extract(j.value, '$[0]')"
)
_INSERT_DELIVERIES = "INSERT OR IGNORE INTO deliveries(name, seq) " + _PAIRS.format(extra="")
_DELETE_DELIVERIES = "DELETE FROM deliveries WHERE (name, seq) IN (" + _PAIRS.format(extra="") + ")"
_BUMP_ATTEMPTS = (
    "UPDATE deliveries SET attempts = attempts + 1 WHERE (name, seq) IN ("
    + _PAIRS.format(extra="")
    + ")"
)
_READ_ATTEMPTS = (
    "SELECT json_group_array(json_array(e.event_id, d.name, d.attempts)) "
    "FROM json_each(?) AS j "
    "JOIN events AS e ON e.event_id = json_extract(j.value, '$[0]') "
    "JOIN deliveries AS d ON d.name = json_extract(j.value, '$[1]') AND d.seq = e.seq"
)
_MOVE_TO_DEAD = (
    "INSERT OR REPLACE INTO dead_deliveries(name, seq, event_id, attempts, error, failed_at) "
    "SELECT d.name, d.seq, e.event_id, d.attempts, json_extract(j.value, '$[2]'), ? "
    "FROM json_each(?) AS j "
    "JOIN events AS e ON e.event_id = json_extract(j.value, '$[0]') "
    "JOIN deliveries AS d ON d.name = json_extract(j.value, '$[1]') AND d.seq = e.seq"
)


def append(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    """``runs``: ``(events, durable_names)`` per op; one insert for all events of the run."""
    rows: list[tuple[str, str, float, str | None, int, str]] = []
    pairs: list[tuple[str, str]] = []
    results: list[Any] = []
    for events, names in runs:
        try:
            op_rows = []
            for event in events:
                body = event.to_jsonl()
                op_rows.append(
                    (
                        event.event_id,
                        event.event_type,
                        event.timestamp,
                        event.correlation_id,
                        len(body.encode("utf-8")),
                        body,
                    )
                )
        except Exception as exc:  # this op only: its payload cannot be encoded
            results.append(exc)
            continue
        rows.extend(op_rows)
        if names:
            pairs.extend((event.event_id, name) for event in events for name in names)
        results.append(None)
    if rows:
        conn.execute(_INSERT_EVENTS, (dumps(rows),))
    if pairs:
        conn.execute(_INSERT_DELIVERIES, (dumps(pairs),))
    return results


def ack(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    """``runs``: ``(event_id, name)`` per op; deletes the pending delivery rows."""
    conn.execute(_DELETE_DELIVERIES, (dumps(runs),))
    return [None] * len(runs)


def attempt(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    """``runs``: ``(event_id, name)``; +1 attempt each, result = new count (0 = not pending).

    The same delivery twice in a run is split into separate statements so each op
    sees its own increment.
    """
    results: list[Any] = []
    chunk: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for key in runs:
        key = (key[0], key[1])
        if key in seen:
            results.extend(_attempt_chunk(conn, chunk))
            chunk, seen = [], set()
        chunk.append(key)
        seen.add(key)
    results.extend(_attempt_chunk(conn, chunk))
    return results


def _attempt_chunk(conn: sqlite3.Connection, chunk: Sequence[tuple[str, str]]) -> list[int]:
    if not chunk:
        return []
    text = dumps(chunk)
    conn.execute(_BUMP_ATTEMPTS, (text,))
    counts = {
        (eid, name): n
        for eid, name, n in loads(conn.execute(_READ_ATTEMPTS, (text,)).fetchone()[0])
    }
    return [counts.get(key, 0) for key in chunk]


def dead(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    """``runs``: ``(event_id, name, error)``; moves pending deliveries to ``dead_deliveries``."""
    text = dumps([[eid, name, str(error)] for eid, name, error in runs])
    conn.execute(_MOVE_TO_DEAD, (time.time(), text))
    conn.execute(_DELETE_DELIVERIES, (text,))
    return [None] * len(runs)


# -- dead-letter queue entries (rare: one statement per op) ----------------------


def _entry_row(entry: Any) -> tuple[str, float, str, str, str]:
    data = entry.to_dict()
    event = data.get("event") or {}
    reason = data.get("reason")
    return (
        str(data["id"]),
        float(data["timestamp"]),
        str(event.get("event_type", "")),
        str(getattr(reason, "value", reason)),
        dumps(data),
    )


def dlq_put(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    """Insert or replace; a re-put moves the entry to the newest position."""
    for entry in runs:
        row = _entry_row(entry)
        conn.execute("DELETE FROM dlq WHERE id = ?", (row[0],))
        conn.execute(
            "INSERT INTO dlq(id, timestamp, event_type, reason, body) VALUES (?, ?, ?, ?, ?)", row
        )
    return [None] * len(runs)


def dlq_update(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    """Replace an existing entry in place (same position); unknown ids are ignored."""
    for entry in runs:
        eid, ts, etype, reason, body = _entry_row(entry)
        conn.execute(
            "UPDATE dlq SET timestamp = ?, event_type = ?, reason = ?, body = ? WHERE id = ?",
            (ts, etype, reason, body, eid),
        )
    return [None] * len(runs)


def dlq_remove(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    return [conn.execute("DELETE FROM dlq WHERE id = ?", (eid,)).rowcount > 0 for eid in runs]


def dlq_clear(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    return [conn.execute("DELETE FROM dlq").rowcount for _ in runs]


def dlq_clear_older(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    return [
        conn.execute("DELETE FROM dlq WHERE timestamp < ?", (float(cutoff),)).rowcount
        for cutoff in runs
    ]


HANDLERS = {
    APPEND: append,
    ACK: ack,
    ATTEMPT: attempt,
    DEAD: dead,
    DLQ_PUT: dlq_put,
    DLQ_UPDATE: dlq_update,
    DLQ_REMOVE: dlq_remove,
    DLQ_CLEAR: dlq_clear,
    DLQ_CLEAR_OLDER: dlq_clear_older,
}
