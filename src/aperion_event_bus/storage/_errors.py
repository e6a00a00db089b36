"""Exceptions raised by the SQLite event store.

They live here (not in ``aperion_event_bus.errors``) while the store is being
built; every class derives from ``EventBusError`` so ``except EventBusError``
keeps catching store failures. Each message names the database path and says
what to do about the problem.
"""

from __future__ import annotations

import os

from ..errors import EventBusError

__all__ = ["StoreClosedError", "StoreCorruptError", "StoreError"]


class StoreError(EventBusError):
    """The store could not open, read or commit; ``path`` names the database file.

    A failed ``append`` raises this: the event was *not* committed. The original
    ``sqlite3``/``OSError`` exception is chained as ``__cause__``.
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None


class StoreCorruptError(StoreError):
    """The file is not an aperion event store: corrupt, truncated, or another application's."""


class StoreClosedError(StoreError, RuntimeError):
    """The store was closed (or never opened); nothing more can be written through it."""
