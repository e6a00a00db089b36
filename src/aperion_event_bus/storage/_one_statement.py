"""The common group commit as ONE SQL statement: appends of the bus's commit batches,
their pending deliveries, one range of acks and the attempts recorded for one name.

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
event was new. Attempts (``record_attempt_nowait``: a durable async handler that
suspends) bump the remembered seqs of one name, each delivery once. Anything else
(per-op encoding failures, NaN, several ack ranges, acks or attempts of ids not
remembered, the same attempt twice, other op kinds) takes the general path.
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
    "CREATE TEMP VIEW IF NOT EXISTS apeb_commit(bodies, ids, names, ack_name, ack_first, ack_last,"
    " attempt_name, attempt_seqs) AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
    "CREATE TEMP TRIGGER IF NOT EXISTS apeb_commit_run INSTEAD OF INSERT ON apeb_commit BEGIN"
    " UPDATE deliveries SET attempts = attempts + 1 WHERE NEW.attempt_name IS NOT NULL"
    "  AND name = NEW.attempt_name AND seq IN (SELECT value FROM json_each(NEW.attempt_seqs));"
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
_RUN = "INSERT INTO apeb_commit VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_APPENDED = "SELECT inserted, last FROM temp.apeb_appended"


class Prepared:
    """The parameters of one commit statement, and the events it appends."""

    __slots__ = ("events", "params")

    def __init__(self, events: list[Event], params: tuple[Any, ...]) -> None:
        self.events = events
        self.params = params


class OneStatementCommit:
    """Prepares and runs the one-statement commit on the writer's connection."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        seqs: RecentSeqs,
        append_kind: str,
        ack_kind: str,
        attempt_kind: str,
    ):
        for statement in _SETUP:
            conn.execute(statement)
        self._conn = conn
        self._seqs = seqs
        self._append_kind = append_kind
        self._ack_kind = ack_kind
        self._attempt_kind = attempt_kind

    def _entries(
        self, batch: Sequence[Any]
    ) -> list[tuple[tuple[Event, ...], tuple[str, ...]]] | None:
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
        """Could ``batch`` and ``deferred`` commit as this statement (the seqs and
        the encoding aside): appends naming the same subscriptions, acks of one name,
        attempts of one name?"""
        if deferred and self._split_deferred(deferred) is None:
            return False
        return self._entries(batch) is not None

    def _split_deferred(
        self, deferred: Sequence[tuple[str, Any]]
    ) -> tuple[list[Any], list[Any]] | None:
        """The ``(event_id, name)`` keys of the acks and of the attempts when every
        deferred op is one or the other and each kind names one subscription, else
        None."""
        ack_kind, attempt_kind = self._ack_kind, self._attempt_kind
        acks: list[Any] = []
        attempts: list[Any] = []
        for kind, key in deferred:
            if kind == ack_kind:
                group = acks
            elif kind == attempt_kind:
                group = attempts
            else:
                return None
            if group and key[1] != group[0][1]:
                return None  # a second subscription name
            group.append(key)
        return acks, attempts

    def prepare(self, batch: Sequence[Any], deferred: Sequence[tuple[str, Any]]) -> Prepared | None:
        """The statement for ``batch`` and ``deferred`` acks and attempts, or None
        when they need the general path."""
        entries = self._entries(batch)
        if entries is None:
            return None
        names = entries[0][1]
        extra = self._deferred_params(deferred) if deferred else (None,) * 5
        if extra is None:
            return None
        events = [event for entry_events, _ in entries for event in entry_events]
        try:
            text, finite = encode_checked(events)
        except Exception:
            return None  # the general path finds which op cannot be encoded
        if not finite:
            return None
        ids = dumps([event.event_id for event in events])
        return Prepared(events, (text, ids, dumps(names), *extra))

    def _deferred_params(self, deferred: Sequence[tuple[str, Any]]) -> tuple[Any, ...] | None:
        """(ack name, first seq, last seq, attempt name, attempt seqs as JSON) for
        the statement, or None: acks must be one run of consecutive seqs, attempts
        distinct deliveries, all of remembered ids."""
        split = self._split_deferred(deferred)
        if split is None:
            return None
        acks, attempts = split
        ack_params: tuple[Any, Any, Any] = (None, None, None)
        if acks:
            seqs = self._seqs_of(acks)
            span = seq_range(seqs) if seqs is not None else None
            if span is None:
                return None  # an id not remembered, or not one run of consecutive seqs
            ack_params = (acks[0][1], *span)
        attempt_params: tuple[Any, Any] = (None, None)
        if attempts:
            seqs = self._seqs_of(attempts)
            if seqs is None or len(set(seqs)) != len(seqs):
                return None  # the general path counts a repeated attempt twice
            attempt_params = (attempts[0][1], dumps(seqs))
        return (*ack_params, *attempt_params)

    def _seqs_of(self, keys: list[Any]) -> list[int] | None:
        """The remembered seqs of ``keys`` (``(event_id, name)``), or None if any is not."""
        newest_get = self._seqs.newest.get  # where most find their seq
        get = self._seqs.get
        seqs: list[int] = []
        for key in keys:
            seq = newest_get(key[0])
            if seq is None:
                seq = get(key[0])
                if seq is None:
                    return None
            seqs.append(seq)
        return seqs

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
