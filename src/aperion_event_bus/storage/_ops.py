"""The write operations the writer thread runs, each a batch handler.

Every handler receives the arguments of a run of consecutive ops of its kind and
returns one result per op. Runs of appends, acks, attempts and dead-letterings
are shipped to SQLite as one JSON array and expanded with ``json_each``, so a run
costs a handful of statements however long it is (see ``_writer`` for why the
statement count matters). Appends are in ``_append``.

Events are stored with ``INSERT OR IGNORE``: appending an event id that is
already stored keeps the first copy and only adds the new pending deliveries.
"""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from .._json import dumps, loads, storable
from ._append import append

__all__ = [
    "ACK",
    "APPEND",
    "ATTEMPT",
    "DEAD",
    "DLQ_CLEAR",
    "DLQ_CLEAR_OLDER",
    "DLQ_COUNT",
    "DLQ_PUT",
    "DLQ_REMOVE",
    "DLQ_UPDATE",
    "HANDLERS",
    "RecentSeqs",
    "make_ack",
    "seq_range",
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
DLQ_COUNT = "dlq_count"

# One name's deliveries by event id: ``name = ?1 AND seq IN (...)`` is a primary-key
# lookup per id. (A row value ``(name, seq) IN (...)`` uses only the name column of
# the key and scans every pending row of that name for each id.)
_SEQS_OF_IDS = "SELECT e.seq FROM json_each(?2) AS j JOIN events AS e ON e.event_id = j.value"
_DELETE_DELIVERIES = "DELETE FROM deliveries WHERE name = ?1 AND seq IN (" + _SEQS_OF_IDS + ")"
_BUMP_ATTEMPTS = (
    "UPDATE deliveries SET attempts = attempts + 1 WHERE name = ?1 AND seq IN ("
    + _SEQS_OF_IDS
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


def _per_name(conn: sqlite3.Connection, statement: str, keys: Iterable[Sequence[str]]) -> None:
    """Run ``statement`` (``?1`` name, ``?2`` JSON array of event ids) once per name."""
    ids: dict[str, list[str]] = {}
    for key in keys:
        found = ids.get(key[1])
        if found is None:
            ids[key[1]] = [key[0]]
        else:
            found.append(key[0])
    for name, event_ids in ids.items():
        conn.execute(statement, (name, dumps(event_ids)))


def ack(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    """``runs``: ``(event_id, name)`` per op; deletes the pending delivery rows."""
    _per_name(conn, _DELETE_DELIVERIES, runs)
    return [None] * len(runs)


# Acks by seq, for event ids whose seq the writer remembers (``RecentSeqs``): a run
# of consecutive seqs is one range delete on the primary key, anything else a
# primary-key lookup per seq. Neither touches the event id index.
_DELETE_SEQ_RANGE = "DELETE FROM deliveries WHERE name = ?1 AND seq BETWEEN ?2 AND ?3"
_DELETE_SEQS = "DELETE FROM deliveries WHERE name = ?1 AND seq IN (SELECT value FROM json_each(?2))"

#: Event ids remembered per generation, and the generations kept: the last
#: 61,440 to 65,536 appended ids are remembered. Many small generations rather than
#: two large ones: growing a dict of 65,536 ids reallocates megabytes with the GIL
#: held, which stalled the event loop for ~5 ms; growing one of 4,096 costs ~0.2 ms.
SEQ_GENERATION: Final = 4096
SEQ_GENERATIONS: Final = 16


class RecentSeqs:
    """``event_id -> seq`` of the events this writer appended recently (writer thread only).

    An ack names its delivery by event id; finding the seq through the event id index
    was the larger part of an ack's cost. The append handler knows the seqs of a run
    it inserted with consecutive ``seq`` values (``stage``), and they become visible
    here only once that transaction has committed (``commit``): a rolled-back
    transaction's seqs are handed out again by SQLite and must never be used
    (``rollback``). Seqs are never reused after a commit (``AUTOINCREMENT``), so a
    remembered seq is either the event's or gone (compacted: the ack finds nothing,
    as the id lookup would). An append whose seqs are not known (a duplicate id in
    it, say) ``forget``s everything, so an id re-appended under a new seq cannot be
    acked under its old one. Ids not remembered are acked through the index.
    """

    __slots__ = ("generation_size", "generations", "newest", "staged")

    def __init__(
        self, generation_size: int = SEQ_GENERATION, generations: int = SEQ_GENERATIONS
    ) -> None:
        self.generation_size = generation_size
        #: newest first; the oldest falls off when a new one starts
        self.generations: deque[dict[str, int]] = deque(maxlen=generations)
        self.newest: dict[str, int] = {}
        self.generations.append(self.newest)
        self.staged: list[tuple[Sequence[Any], int] | None] = []  # None: forget all

    def get(self, event_id: str) -> int | None:
        """The remembered seq of ``event_id``, or None."""
        for generation in self.generations:
            seq = generation.get(event_id)
            if seq is not None:
                return seq
        return None

    def stage(self, events: Sequence[Any], first: int) -> None:
        """``events`` got the seqs ``first``, ``first + 1``, ... in the open transaction."""
        self.staged.append((events, first))

    def forget(self) -> None:
        """Appends of the open transaction got seqs that are not known: once it
        commits, remember nothing from before."""
        self.staged.append(None)

    def commit(self) -> None:
        staged = self.staged
        if not staged:
            return
        self.staged = []
        for item in staged:
            if item is None:
                self.generations.clear()
                self._start_generation()
                continue
            events, first = item
            newest = self.newest
            newest.update({e.event_id: seq for seq, e in enumerate(events, first)})
            if len(newest) >= self.generation_size:
                self._start_generation()

    def rollback(self) -> None:
        self.staged = []

    def _start_generation(self) -> None:
        self.newest = {}
        self.generations.appendleft(self.newest)


def seq_range(seqs: list[int]) -> tuple[int, int] | None:
    """(first, last) when ``seqs`` (acked seqs, repeats allowed: an ack can arrive
    twice) cover every seq from first to last, else None. Only then is one range
    delete safe: a gap is a delivery nobody acked."""
    first, last = min(seqs), max(seqs)
    if last - first + 1 == len(set(seqs)):
        return first, last
    return None


def _delete_seqs(conn: sqlite3.Connection, name: str, seqs: list[int]) -> None:
    span = seq_range(seqs)
    if span is not None:
        conn.execute(_DELETE_SEQ_RANGE, (name, *span))  # every seq in between is acked
    else:
        conn.execute(_DELETE_SEQS, (name, dumps(seqs)))


def make_ack(seqs: RecentSeqs) -> Callable[[sqlite3.Connection, list[Any]], list[Any]]:
    """The ack handler of a writer whose appends record their seqs in ``seqs``."""

    def ack_by_seq(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
        """``runs``: ``(event_id, name)`` per op; deletes the pending delivery rows."""
        by_name: dict[str, list[int]] = {}
        unknown: list[Any] = []
        newest_get = seqs.newest.get  # where most acks find their seq
        get = seqs.get
        for key in runs:
            seq = newest_get(key[0])
            if seq is None:
                seq = get(key[0])
                if seq is None:
                    unknown.append(key)
                    continue
            found = by_name.get(key[1])
            if found is None:
                by_name[key[1]] = [seq]
            else:
                found.append(seq)
        for name, found in by_name.items():
            _delete_seqs(conn, name, found)
        if unknown:
            _per_name(conn, _DELETE_DELIVERIES, unknown)
        return [None] * len(runs)

    return ack_by_seq


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
    _per_name(conn, _BUMP_ATTEMPTS, chunk)
    text = dumps(chunk)
    counts = {
        (eid, name): n
        for eid, name, n in loads(conn.execute(_READ_ATTEMPTS, (text,)).fetchone()[0])
    }
    return [counts.get(key, 0) for key in chunk]


def dead(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    """``runs``: ``(event_id, name, error)``; moves pending deliveries to ``dead_deliveries``."""
    text = storable(dumps([[eid, name, str(error)] for eid, name, error in runs]))
    conn.execute(_MOVE_TO_DEAD, (time.time(), text))
    _per_name(conn, _DELETE_DELIVERIES, runs)
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
        storable(dumps(data)),  # an error message may hold a lone surrogate
    )


def dlq_put(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    """Insert or replace; a re-put moves the entry to the newest position. Result: the
    rows added (1, or 0 when it replaced an entry)."""
    added: list[Any] = []
    for entry in runs:
        row = _entry_row(entry)
        replaced = conn.execute("DELETE FROM dlq WHERE id = ?", (row[0],)).rowcount
        conn.execute(
            "INSERT INTO dlq(id, timestamp, event_type, reason, body) VALUES (?, ?, ?, ?, ?)", row
        )
        added.append(1 - replaced)
    return added


def dlq_count(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    """The number of entries, read in the writer's order (see ``_dlq``)."""
    count = int(conn.execute("SELECT COUNT(*) FROM dlq").fetchone()[0])
    return [count] * len(runs)


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
    DLQ_COUNT: dlq_count,
}
