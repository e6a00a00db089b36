"""Dead-letter entries kept in the event store (a ``DLQBackend`` for ``DeadLetterQueue``).

Entries are stored as JSON of ``FailedEvent.to_dict()`` (the original, unredacted
event is needed to retry it; the file is mode 0600) and rebuilt with
``FailedEvent.from_dict``. "Newest first" is put order: a re-``put`` moves an
entry to the newest end, ``update`` keeps its place.

Writes go through the store's writer thread. From a plain thread they block until
committed. A ``put`` made on a thread running an event loop (the bus dead-letters
a failed async handler there) must not make the loop wait for the disk: it is
queued without waiting and committed in order with the rest of the writer's work,
normally with the next group commit; ``await store.flush()`` waits for it and
``close()`` commits it. Until then the entry is kept "behind" in memory, so reads
(``get``, ``list``, ``oldest``, ``size``) already see it; a put that fails to
commit is logged, counted in ``write_errors`` and dropped from memory.

``size()`` reads nothing: the number of committed entries is read once, in the
writer's order, and then kept by the result of each write, which the writer
reports on its thread in commit order (a re-put of a stored id counts as a new
entry until it commits).
"""

from __future__ import annotations

import builtins
import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._json import loads
from .._runtime import running_loop
from .._wiring import library_logger
from . import _ops

if TYPE_CHECKING:
    from ..dlq import FailedEvent
    from .sqlite import SQLiteStore

__all__ = ["SQLiteDLQBackend"]

logger = library_logger("aperion_event_bus.dlq")

# how each write changes the number of stored entries, from its result
_ROWS_ADDED: dict[str, Callable[[Any], int]] = {
    _ops.DLQ_PUT: int,
    _ops.DLQ_UPDATE: lambda _: 0,
    _ops.DLQ_REMOVE: lambda removed: -int(bool(removed)),
    _ops.DLQ_CLEAR: lambda count: -int(count),
    _ops.DLQ_CLEAR_OLDER: lambda count: -int(count),
}


def _rebuild(body: str) -> FailedEvent:
    from ..dlq import FailedEvent  # imported late: dlq imports the store's users, not vice versa

    return FailedEvent.from_dict(loads(body))


def _wanted(entry: FailedEvent, event_type: str | None, reason: str | None) -> bool:
    return (event_type is None or entry.event.event_type == event_type) and (
        reason is None or entry.reason == reason
    )


class SQLiteDLQBackend:
    """Implements the ``aperion_event_bus.dlq.DLQBackend`` protocol on an open SQLiteStore.

    Use ``store.dlq_backend()`` (one backend per store: the entry count and the
    entries not committed yet live in it)."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._rows = 0  # committed entries (see the module doc)
        self._behind: dict[str, FailedEvent] = {}  # put without waiting, not committed yet
        self.write_errors = 0
        self.last_error: str | None = None
        self._store._call_sync(_ops.DLQ_COUNT, None, then=self._counted)

    # -- writes ----------------------------------------------------------------

    def put(self, entry: FailedEvent) -> None:
        if running_loop() is None:
            self._write(_ops.DLQ_PUT, entry)
            return
        entry = entry.copy()
        with self._lock:
            self._behind[entry.id] = entry
        try:
            self._store._call_nowait(
                _ops.DLQ_PUT, entry, functools.partial(self._put_settled, entry)
            )
        except BaseException:
            with self._lock:
                self._drop_behind(entry)
            raise

    def update(self, entry: FailedEvent) -> None:
        self._write(_ops.DLQ_UPDATE, entry)

    def remove(self, id: str) -> bool:
        return bool(self._write(_ops.DLQ_REMOVE, id))

    def clear(self) -> int:
        return int(self._write(_ops.DLQ_CLEAR, None))

    def clear_older_than(self, cutoff_ts: float) -> int:
        return int(self._write(_ops.DLQ_CLEAR_OLDER, cutoff_ts))

    def _write(self, kind: str, args: Any) -> Any:
        """A write that blocks until committed (the count follows its result)."""
        return self._store._call_sync(kind, args, then=functools.partial(self._committed, kind))

    # writer thread, commit order:

    def _counted(self, result: Any) -> None:
        if not isinstance(result, BaseException):
            with self._lock:
                self._rows = int(result)

    def _committed(self, kind: str, result: Any) -> None:
        if not isinstance(result, BaseException):
            with self._lock:
                self._rows += _ROWS_ADDED[kind](result)

    def _put_settled(self, entry: FailedEvent, result: Any) -> None:
        with self._lock:
            self._drop_behind(entry)
            if not isinstance(result, BaseException):
                self._rows += int(result)
                return
            self.write_errors += 1
            self.last_error = f"{type(result).__name__}: {result}"
        logger.error(
            "DLQ entry %s (event %s %s) could not be stored in %s and is lost: %s",
            entry.id,
            entry.event.event_type,
            entry.event.event_id,
            self._store.path,
            self.last_error,
        )

    def _drop_behind(self, entry: FailedEvent) -> None:
        if self._behind.get(entry.id) is entry:  # not replaced by a later put of the id
            del self._behind[entry.id]

    # -- reads (the entries behind first: they are the newest) -------------------

    def get(self, id: str) -> FailedEvent | None:
        with self._lock:
            behind = self._behind.get(id)
        if behind is not None:
            return behind.copy()
        row = self._fetchone("SELECT body FROM dlq WHERE id = ?", (id,))
        return _rebuild(row[0]) if row is not None else None

    def list(
        self,
        limit: int | None = None,
        event_type: str | None = None,
        reason: str | None = None,
    ) -> builtins.list[FailedEvent]:
        if limit is not None and limit <= 0:
            return []
        reason = str(getattr(reason, "value", reason)) if reason is not None else None
        with self._lock:  # before the query: an entry committed meanwhile is in both
            behind = [e for e in reversed(self._behind.values()) if _wanted(e, event_type, reason)]
        clauses, params = [], []
        if event_type is not None:
            clauses.append("event_type = ?")
            params.append(event_type)
        if reason is not None:
            clauses.append("reason = ?")
            params.append(reason)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT body FROM dlq {where} ORDER BY pos DESC LIMIT ?"
        with self._store._readers().connection() as conn:
            rows = conn.execute(sql, (*params, -1 if limit is None else limit)).fetchall()
        stored = [_rebuild(r[0]) for r in rows]
        if not behind:
            return stored
        ids = {e.id for e in stored}
        found = [e.copy() for e in behind if e.id not in ids] + stored
        return found if limit is None else found[:limit]

    def size(self) -> int:
        with self._lock:
            return self._rows + len(self._behind)

    def oldest(self) -> FailedEvent | None:
        with self._lock:
            first = next(iter(self._behind.values()), None)
        row = self._fetchone("SELECT body FROM dlq ORDER BY pos ASC LIMIT 1", ())
        if row is not None:
            return _rebuild(row[0])
        return first.copy() if first is not None else None

    def _fetchone(self, sql: str, params: tuple[Any, ...]) -> Any:
        with self._store._readers().connection() as conn:
            return conn.execute(sql, params).fetchone()
