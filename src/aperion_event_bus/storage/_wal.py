"""WAL checkpoints run by the writer thread, between batches, never inside a commit.

SQLite's automatic checkpoint (every 1,000 WAL pages) runs inside the ``COMMIT``
that crosses the threshold, so the appends of that batch wait for it (a few ms of
copying pages plus two fsyncs) and so does every event queued behind it. The
store switches it off (``wal_autocheckpoint = 0``) and checkpoints itself:

* after a commit, once its waiters have been woken, so a checkpoint only delays
  the *next* batch;
* when at least ``CHECKPOINT_PAGES`` pages were appended to the WAL since the last
  checkpoint and nothing is queued (the writer would otherwise sit idle), or
  regardless of the queue once ``FORCE_PAGES`` were appended: small checkpoints
  keep each stall short (~1-3 ms) and the WAL bounded under sustained load
  (a fully checkpointed WAL is rewritten from its start by the next commit, and
  ``journal_size_limit`` trims the file when it restarts);
* when the writer has been idle for ``IDLE_SECONDS`` with pages not yet
  checkpointed.

Checkpoints are ``PASSIVE``: they never wait for readers, they copy what readers
allow. The count of pages appended is read from the WAL-index header in the
``-shm`` file (``mxFrame``, see https://www.sqlite.org/walformat.html); if that
file cannot be read, the count is estimated from the number of events committed.

A checkpoint copies pages that are already committed: it changes nothing about
durability (with ``synchronous=NORMAL`` SQLite syncs the WAL before the copy and
the database file after it; with ``FULL`` every commit was already synced). A
failed checkpoint is logged and retried later; it never fails an append.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import time
from typing import Final

from .._wiring import library_logger

__all__ = ["CHECKPOINT_PAGES", "FORCE_PAGES", "IDLE_SECONDS", "WalCheckpointer"]

logger = library_logger("aperion_event_bus.storage")

#: Checkpoint when this many pages were appended since the last one and the queue is empty.
CHECKPOINT_PAGES: Final = 256
#: Checkpoint at this many pages even with work queued (bounds the WAL under sustained load).
FORCE_PAGES: Final = 512
#: Checkpoint what is left after the writer has been idle this long (seconds).
IDLE_SECONDS: Final = 0.25
#: ``PRAGMA journal_size_limit``: the WAL file is truncated to this size when it restarts.
JOURNAL_SIZE_LIMIT: Final = 16 * 1024 * 1024

# WAL-index header (native byte order): iVersion u32 @0, isInit u8 @12, mxFrame u32 @16;
# the header is stored twice (48 bytes each) and both copies match when it is stable.
_HEADER_SIZE: Final = 48
_WAL_INDEX_VERSION: Final = 3007000
_U32: Final = struct.Struct("=I")
#: Fallback when the -shm file cannot be read: WAL pages per committed event (measured
#: ~0.3 for small events in batches of ~100; rounded up to checkpoint early).
_PAGES_PER_UNIT_ESTIMATE: Final = 0.5


class WalCheckpointer:
    """Owned by the writer thread; ``after_commit``/``idle`` decide and run checkpoints."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self._path = path
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        self._shm: int | None = None
        try:
            self._shm = os.open(path + "-shm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            logger.debug("cannot read %s-shm; estimating WAL growth instead", path)
        self._last_frame = self._mx_frame() or 0  # mxFrame at the last checkpoint
        self._estimated = 0.0  # fallback: pages appended since the last checkpoint
        self.checkpoints = 0
        self.checkpointed_pages = 0
        self.failures = 0

    def _mx_frame(self) -> int | None:
        """Index of the last valid frame in the WAL, or None when it cannot be read."""
        if self._shm is None:
            return None
        try:
            raw = os.pread(self._shm, 2 * _HEADER_SIZE, 0)
        except OSError:
            return None
        if (
            len(raw) < 2 * _HEADER_SIZE
            or raw[:_HEADER_SIZE] != raw[_HEADER_SIZE:]
            or _U32.unpack_from(raw, 0)[0] != _WAL_INDEX_VERSION
            or raw[12] != 1
        ):
            return None
        return int(_U32.unpack_from(raw, 16)[0])

    def pages_since_checkpoint(self) -> int:
        """WAL pages appended since the last checkpoint (exact, or the fallback estimate)."""
        frame = self._mx_frame()
        if frame is None:
            return int(self._estimated)
        if frame < self._last_frame:  # the WAL restarted from its beginning
            return frame
        return frame - self._last_frame

    def after_commit(self, units: int, queue_empty: bool) -> None:
        """Called after each commit (waiters already woken) with the units it committed."""
        self._estimated += units * _PAGES_PER_UNIT_ESTIMATE
        pages = self.pages_since_checkpoint()
        if pages >= FORCE_PAGES or (queue_empty and pages >= CHECKPOINT_PAGES):
            self.checkpoint()

    def idle(self) -> None:
        """Called when the writer found nothing to do for ``IDLE_SECONDS``."""
        if self.pages_since_checkpoint() > 0:
            self.checkpoint()

    @property
    def dirty(self) -> bool:
        return self.pages_since_checkpoint() > 0

    def checkpoint(self) -> None:
        """One PASSIVE checkpoint; errors are logged (the data is committed already)."""
        started = time.perf_counter()
        try:
            row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            self.failures += 1
            logger.warning("checkpoint of the event store %s failed: %s", self._path, exc)
            row = None
        frame = self._mx_frame()
        # Even after a failure: count from here, so a persistent error is retried
        # every CHECKPOINT_PAGES pages instead of after every commit.
        self._last_frame = frame if frame is not None else 0
        self._estimated = 0.0
        if row is not None:
            self.checkpoints += 1
            if row[2] > 0:
                self.checkpointed_pages += int(row[2])
            logger.debug(
                "checkpointed %s of %s WAL pages of %s in %.1f ms",
                row[2],
                row[1],
                self._path,
                (time.perf_counter() - started) * 1e3,
            )

    def close(self) -> None:
        if self._shm is not None:
            os.close(self._shm)
            self._shm = None
