"""Dead-letter entries kept in the event store (a ``DLQBackend`` for ``DeadLetterQueue``).

Entries are stored as JSON of ``FailedEvent.to_dict()`` (the original, unredacted
event is needed to retry it; the file is mode 0600) and rebuilt with
``FailedEvent.from_dict``. Writes go through the store's writer thread and block
until committed, so a ``get`` right after ``put`` sees the entry. "Newest first"
is put order: a re-``put`` moves an entry to the newest end, ``update`` keeps its
place.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from .._json import loads
from . import _ops

if TYPE_CHECKING:
    from ..dlq import FailedEvent
    from .sqlite import SQLiteStore

__all__ = ["SQLiteDLQBackend"]


def _rebuild(body: str) -> FailedEvent:
    from ..dlq import FailedEvent  # imported late: dlq imports the store's users, not vice versa

    return FailedEvent.from_dict(loads(body))


class SQLiteDLQBackend:
    """Implements the ``aperion_event_bus.dlq.DLQBackend`` protocol on an open SQLiteStore."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def put(self, entry: FailedEvent) -> None:
        self._store._call_sync(_ops.DLQ_PUT, entry)

    def update(self, entry: FailedEvent) -> None:
        self._store._call_sync(_ops.DLQ_UPDATE, entry)

    def remove(self, id: str) -> bool:
        return bool(self._store._call_sync(_ops.DLQ_REMOVE, id))

    def clear(self) -> int:
        return int(self._store._call_sync(_ops.DLQ_CLEAR, None))

    def clear_older_than(self, cutoff_ts: float) -> int:
        return int(self._store._call_sync(_ops.DLQ_CLEAR_OLDER, cutoff_ts))

    def get(self, id: str) -> FailedEvent | None:
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
        clauses, params = [], []
        if event_type is not None:
            clauses.append("event_type = ?")
            params.append(event_type)
        if reason is not None:
            clauses.append("reason = ?")
            params.append(str(getattr(reason, "value", reason)))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT body FROM dlq {where} ORDER BY pos DESC LIMIT ?"
        with self._store._readers().connection() as conn:
            rows = conn.execute(sql, (*params, -1 if limit is None else limit)).fetchall()
        return [_rebuild(r[0]) for r in rows]

    def size(self) -> int:
        row = self._fetchone("SELECT COUNT(*) FROM dlq", ())
        return int(row[0]) if row is not None else 0

    def oldest(self) -> FailedEvent | None:
        row = self._fetchone("SELECT body FROM dlq ORDER BY pos ASC LIMIT 1", ())
        return _rebuild(row[0]) if row is not None else None

    def _fetchone(self, sql: str, params: tuple[Any, ...]) -> Any:
        with self._store._readers().connection() as conn:
            return conn.execute(sql, params).fetchone()
