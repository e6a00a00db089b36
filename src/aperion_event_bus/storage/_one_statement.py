"""The common group commit as ONE SQL statement: appends of the bus's commit batches,
their pending deliveries, and one range of acks.

Why: ``sqlite3`` releases the GIL for each statement it steps and must take it back
in between. While the event loop thread runs Python (waking the publishers of the
previous commit), the writer gets the GIL back only when the loop goes idle, so a
transaction of several statements (BEGIN, deletes, inserts, COMMIT) keeps the two
threads taking turns. One INSERT into a TEMP view, in autocommit mode, runs the
whole transaction inside one ``sqlite3_step`` call: the view's INSTEAD OF trigger
deletes the acked deliveries, inserts the events and their deliveries, and SQLite
commits when the statement ends, all without the GIL. The writer prepares that
statement's parameters first, then wakes the previous commit's publishers, then
runs it, so the loop's work and the writer's SQLite work overlap.

The statement does what ``_append.append`` and the ack-by-seq handler do for the
same ops: ``INSERT OR IGNORE`` events (a stored event id keeps its first copy),
deliveries looked up by event id (a duplicate id gets its new deliveries on the
stored copy), and the remembered seqs (``RecentSeqs``) staged only when every
event was new. Anything else (per-op encoding failures, NaN, several ack ranges,
acks of ids not remembered, other op kinds) takes the general path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .._json import dumps
from ..events import Event
from ._append import encode_checked, insert_bodies_sql
from ._ops import RecentSeqs, seq_range

__all__ = ["OneStatementCommit", "Prepared"]

_SETUP = (
    "CREATE TEMP TABLE IF NOT EXISTS apeb_appended(inserted INTEGER, last INTEGER)",
    "DELETE FROM temp.apeb_appended",
    "INSERT INTO temp.apeb_appended VALUES (NULL, NULL)",
    "CREATE TEMP VIEW IF NOT EXISTS apeb_commit(bodies, ids, names, ack_name, ack_first, ack_last)"
    " AS SELECT NULL, NULL, NULL, NULL, NULL, NULL",
    "CREATE TEMP TRIGGER IF NOT EXISTS apeb_commit_run INSTEAD OF INSERT ON apeb_commit BEGIN"
    " DELETE FROM deliveries WHERE NEW.ack_name IS NOT NULL AND name = NEW.ack_name"
    "  AND seq BETWEEN NEW.ack_first AND NEW.ack_last;"
    " " + insert_bodies_sql("NEW.bodies") + ";"
    # changes() and last_insert_rowid() of the events insert: how many were new, and
    # the last seq (they revert when the trigger ends, so they are kept here)
    " UPDATE apeb_appended SET inserted = changes(), last = last_insert_rowid();"
    " INSERT OR IGNORE INTO deliveries(name, seq)"
    "  SELECT n.value, e.seq FROM json_each(NEW.ids) AS j"
    "  JOIN events AS e ON e.event_id = j.value, json_each(NEW.names) AS n;"
    " END",
)
_RUN = "INSERT INTO apeb_commit VALUES (?, ?, ?, ?, ?, ?)"
_APPENDED = "SELECT inserted, last FROM temp.apeb_appended"


class Prepared:
    """The parameters of one commit statement, and the events it appends."""

    __slots__ = ("events", "params")

    def __init__(self, events: list[Event], params: tuple[Any, ...]) -> None:
        self.events = events
        self.params = params


class OneStatementCommit:
    """Prepares and runs the one-statement commit on the writer's connection."""

    def __init__(self, conn: sqlite3.Connection, seqs: RecentSeqs, append_kind: str, ack_kind: str):
        for statement in _SETUP:
            conn.execute(statement)
        self._conn = conn
        self._seqs = seqs
        self._append_kind = append_kind
        self._ack_kind = ack_kind

    def _entries(self, batch: Sequence[Any]) -> list[tuple[tuple[Event, ...], tuple[str, ...]]] | None:
        """The appends of ``batch`` when every op is of ``append_kind`` (its ``args``
        hold ``entries``) and every append names the same subscriptions, else None."""
        append_kind = self._append_kind
        entries: list[tuple[tuple[Event, ...], tuple[str, ...]]] = []
        for op in batch:
            if op.kind != append_kind:
                return None
            entries.extend(op.args.entries)
        if not entries:
            return None
        names = entries[0][1]
        for entry in entries:
            if entry[1] is not names and entry[1] != names:
                return None
        return entries

    def fits(self, batch: Sequence[Any], deferred: Sequence[tuple[str, Any]]) -> bool:
        """Could ``batch`` and ``deferred`` commit as this statement (the acks' seqs
        and the encoding aside): appends naming the same subscriptions, acks of one
        name?"""
        if deferred and self._acks_name(deferred) is None:
            return False
        return self._entries(batch) is not None

    def _acks_name(self, deferred: Sequence[tuple[str, Any]]) -> str | None:
        """The one subscription name when every deferred op is an ack of it, else None."""
        ack_kind = self._ack_kind
        name: str = deferred[0][1][1]
        for kind, key in deferred:
            if kind != ack_kind or key[1] != name:
                return None
        return name

    def prepare(self, batch: Sequence[Any], deferred: Sequence[tuple[str, Any]]) -> Prepared | None:
        """The statement for ``batch`` and ``deferred`` acks, or None when they need
        the general path."""
        entries = self._entries(batch)
        if entries is None:
            return None
        names = entries[0][1]
        acks = self._ack_range(deferred) if deferred else (None, None, None)
        if acks is None:
            return None
        events = [event for entry_events, _ in entries for event in entry_events]
        try:
            text, finite = encode_checked(events)
        except Exception:
            return None  # the general path finds which op cannot be encoded
        if not finite:
            return None
        ids = dumps([event.event_id for event in events])
        return Prepared(events, (text, ids, dumps(names), *acks))

    def _ack_range(self, deferred: Sequence[tuple[str, Any]]) -> tuple[Any, Any, Any] | None:
        """The acks as one (name, first seq, last seq) range, or None."""
        name = self._acks_name(deferred)
        if name is None:
            return None
        newest_get = self._seqs.newest.get  # where most acks find their seq
        get = self._seqs.get
        seqs: list[int] = []
        for _, key in deferred:
            seq = newest_get(key[0])
            if seq is None:
                seq = get(key[0])
                if seq is None:
                    return None
            seqs.append(seq)
        span = seq_range(seqs)
        if span is None:
            return None  # not one run of consecutive seqs
        return name, *span

    def run(self, prepared: Prepared) -> None:
        """Run the statement (one autocommit transaction) and stage the seqs of its
        events when every one was new. Raises when it failed (nothing was stored)."""
        conn = self._conn
        conn.execute(_RUN, prepared.params)
        # committed from here on: a failure to read the seqs back only costs the
        # acks-by-seq shortcut, never the publishers' success
        try:
            inserted, last = conn.execute(_APPENDED).fetchone()
        except sqlite3.Error:
            inserted = last = None
        events = prepared.events
        if inserted == len(events) and last is not None:
            self._seqs.stage(events, last - len(events) + 1)
        else:
            self._seqs.forget()
