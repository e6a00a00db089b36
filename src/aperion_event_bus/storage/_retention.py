"""Retention: delete acknowledged events older than an age or beyond a byte budget.

An event that still has an unacknowledged delivery is never deleted unless the
compaction is forced; then its pending deliveries go too, a warning is logged on
``aperion_event_bus.storage`` (one per chunk that dropped any, logged as the chunk
runs: a chunk whose commit then fails was logged but lost nothing) and the report
counts them. Work is done in chunks of ``CHUNK`` events, one chunk per
writer batch, so a large compaction never holds up appends for long. Appends land between the chunks, so each chunk decides
again, in its own transaction, which of its events are pending: a forced chunk
deletes the deliveries of exactly the events it deletes (also those that arrived
after the compaction started), and an unforced one skips the pending events.

Sizes are the UTF-8 length of each event's stored JSON (``events.size``); the
file itself does not shrink (SQLite reuses the freed pages).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from typing import Any

from .._wiring import library_logger

__all__ = ["CHUNK", "CompactionJob", "CompactionReport"]

logger = library_logger("aperion_event_bus.storage")

CHUNK = 2000
_NOT_PENDING = "seq NOT IN (SELECT seq FROM deliveries)"
# ``{verb}`` the deliveries of a chunk's events (parameters: the chunk's seq range
# twice, then the phase's). The key is (name, seq): the few names are found by
# skipping through the key (one lookup per name), then each name's seq range is
# read, never the whole table. (No RETURNING: it needs SQLite 3.35.)
_CHUNK_DELIVERIES = (
    "WITH RECURSIVE names(name) AS (SELECT MIN(name) FROM deliveries UNION ALL "
    "SELECT (SELECT MIN(name) FROM deliveries WHERE name > names.name) FROM names "
    "WHERE names.name IS NOT NULL) "
    "{verb} FROM deliveries WHERE name IN (SELECT name FROM names) AND seq BETWEEN ? AND ? "
    "AND seq IN (SELECT seq FROM events WHERE seq BETWEEN ? AND ? AND {where})"
)


@dataclasses.dataclass(frozen=True)
class CompactionReport:
    """What one compaction did.

    ``forced_events``/``forced_deliveries``: events deleted although they had
    unacknowledged deliveries (only with ``force=True``) and those deliveries.
    ``kept_pending``: events that matched the policy but were kept because a
    delivery is still pending. ``over_budget``: ``max_bytes`` could not be met.
    """

    deleted_events: int = 0
    deleted_bytes: int = 0
    forced_events: int = 0
    forced_deliveries: int = 0
    kept_pending: int = 0
    remaining_events: int = 0
    remaining_bytes: int = 0
    over_budget: bool = False
    duration_seconds: float = 0.0


class CompactionJob:
    """A compaction in progress; the writer calls ``step`` once per batch until done."""

    def __init__(
        self, max_age_seconds: float | None, max_bytes: int | None, *, force: bool = False
    ) -> None:
        self.max_age_seconds = max_age_seconds
        self.max_bytes = max_bytes
        self.force = force
        self._started = time.monotonic()
        self._cutoff_ts = time.time() - max_age_seconds if max_age_seconds is not None else None
        self._phase = "age" if max_age_seconds is not None else "size"
        self._where: str | None = None  # the current phase's deletion predicate
        self._params: tuple[Any, ...] = ()
        self._counts = dict.fromkeys(
            ("deleted_events", "deleted_bytes", "forced_events", "forced_deliveries"), 0
        )
        self._kept: set[int] = set()
        self._over_budget = False

    def step(self, conn: sqlite3.Connection) -> CompactionReport | None:
        """Do one chunk of work; return the report when finished, else None."""
        while self._phase != "done":
            if self._where is None:
                self._begin_phase(conn)
                continue
            if self._delete_chunk(conn):
                return None
            self._where = None
            self._phase = "size" if self._phase == "age" else "done"
        return self._finish(conn)

    # -- phases ----------------------------------------------------------------

    def _begin_phase(self, conn: sqlite3.Connection) -> None:
        if self._phase == "age":
            if self._cutoff_ts is None:
                self._phase = "size"
                return
            self._set_target(conn, "timestamp < ?", (self._cutoff_ts,))
            return
        if self.max_bytes is None:
            self._phase = "done"
            return
        total = conn.execute("SELECT COALESCE(SUM(size), 0) FROM events").fetchone()[0]
        excess = total - self.max_bytes
        if excess <= 0:
            self._phase = "done"
            return
        candidates = "" if self.force else f"WHERE {_NOT_PENDING}"
        row = conn.execute(
            "SELECT seq FROM (SELECT seq, SUM(size) OVER (ORDER BY seq) AS running "
            f"FROM events {candidates}) WHERE running >= ? ORDER BY seq LIMIT 1",
            (excess,),
        ).fetchone()
        if row is None:  # not enough deletable events to meet the budget
            self._over_budget = True
            last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        else:
            last = row[0]
        self._set_target(conn, "seq <= ?", (last,))

    def _set_target(self, conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> None:
        """Start deleting the events matching ``where`` (the pending ones only if forced:
        their deliveries are dropped chunk by chunk, see ``_delete_chunk``)."""
        if not self.force:
            self._kept.update(
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT seq FROM deliveries "
                    f"WHERE seq IN (SELECT seq FROM events WHERE {where})",
                    params,
                )
            )
        self._where = where if self.force else f"{where} AND {_NOT_PENDING}"
        self._params = params

    def _delete_chunk(self, conn: sqlite3.Connection) -> bool:
        """Delete up to CHUNK matching events (oldest first) and, when forced, their
        pending deliveries, in this transaction; False when none matched."""
        assert self._where is not None
        count, size, first, last = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(seq), MAX(seq) FROM "
            f"(SELECT seq, size FROM events WHERE {self._where} ORDER BY seq LIMIT {CHUNK})",
            self._params,
        ).fetchone()
        if not count:
            return False
        params = (first, last, *self._params)
        if self.force:
            self._drop_deliveries(conn, (first, last, *params))
        conn.execute(f"DELETE FROM events WHERE seq BETWEEN ? AND ? AND {self._where}", params)
        self._counts["deleted_events"] += count
        self._counts["deleted_bytes"] += size
        return True

    def _drop_deliveries(self, conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
        """Delete, count and log the pending deliveries of the chunk's events."""
        where = self._where
        count = _CHUNK_DELIVERIES.format(verb="SELECT COUNT(*), COUNT(DISTINCT seq)", where=where)
        deliveries, events = conn.execute(count, params).fetchone()
        if not deliveries:
            return
        conn.execute(_CHUNK_DELIVERIES.format(verb="DELETE", where=where), params)
        self._counts["forced_events"] += events
        self._counts["forced_deliveries"] += deliveries
        logger.warning(
            "retention deleted %d events that still had %d unacknowledged deliveries "
            "(force=True); those deliveries will not be redelivered",
            events,
            deliveries,
        )

    # -- results ---------------------------------------------------------------

    @property
    def partial_result(self) -> CompactionReport:
        """The report of a job the writer's close cut short (remaining counts -1)."""
        return self._report(None)

    def _report(self, conn: sqlite3.Connection | None) -> CompactionReport:
        """The report so far; without ``conn`` (an interrupted job) remaining counts are -1."""
        remaining, remaining_bytes = -1, -1
        if conn is not None:
            remaining, remaining_bytes = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM events"
            ).fetchone()
        return CompactionReport(
            **self._counts,
            kept_pending=len(self._kept),
            remaining_events=remaining,
            remaining_bytes=remaining_bytes,
            over_budget=self._over_budget,
            duration_seconds=time.monotonic() - self._started,
        )

    def _finish(self, conn: sqlite3.Connection) -> CompactionReport:
        report = self._report(conn)
        if report.over_budget:
            logger.warning(
                "retention could not bring the event store under max_bytes=%d: %d events "
                "still have unacknowledged deliveries (remaining %d bytes)",
                self.max_bytes,
                report.kept_pending,
                report.remaining_bytes,
            )
        return report


def compact_handler(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
    """Writer handler: one chunk of each queued compaction job per batch."""
    from ._writer import RESUBMIT

    out: list[Any] = []
    for job in runs:
        report = job.step(conn)
        out.append(RESUBMIT if report is None else report)
    return out
