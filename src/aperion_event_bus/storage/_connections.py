"""Opening the store's SQLite connections safely, and translating SQLite errors.

* The database file is created by us with mode 0600 before SQLite opens it
  (SQLite then gives its ``-wal``/``-shm`` files the same mode); an existing file
  with looser permissions is tightened.
* A file that does not start with the SQLite header is rejected before SQLite
  touches it, so a foreign file is never modified.
* The writer connection runs in WAL mode with the chosen ``synchronous`` level;
  reader connections are ``query_only`` and are pooled so threads can share them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator

from .._wiring import library_logger
from ._errors import StoreCorruptError, StoreError
from ._schema import SCHEMA_VERSION, ensure_schema

__all__ = ["ReaderPool", "open_writer", "translate_error"]

logger = library_logger("aperion_event_bus.storage")

_FILE_MODE = 0o600
_DIR_MODE = 0o700
_HEADER = b"SQLite format 3\x00"
_BUSY_TIMEOUT_S = 10.0
_MIN_SQLITE = (3, 25, 0)
_CORRUPT_MARKERS = ("not a database", "malformed", "corrupt")


def translate_error(exc: BaseException, path: str, doing: str) -> StoreError:
    """A StoreError (or StoreCorruptError) for ``exc`` whose message names ``path``."""
    if isinstance(exc, StoreError):
        return exc
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, sqlite3.DatabaseError) and any(m in lowered for m in _CORRUPT_MARKERS):
        err: StoreError = StoreCorruptError(
            f"cannot {doing}: {path} is corrupt or not an aperion event store ({text}); "
            "restore it from a backup or point the store at a new file",
            path,
        )
    elif "full" in lowered:
        err = StoreError(f"cannot {doing} {path}: {text}; free disk space and retry", path)
    elif "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        err = StoreError(
            f"cannot {doing} {path}: {text}; check that the file and its directory "
            "exist and are writable by this process",
            path,
        )
    else:
        err = StoreError(f"cannot {doing} {path}: {text}", path)
    err.__cause__ = exc
    return err


def _prepare_file(path: str) -> None:
    """Create ``path`` with mode 0600 (and missing parent directories with 0700)."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, mode=_DIR_MODE, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), _FILE_MODE)
    except OSError as exc:
        raise StoreError(
            f"cannot open the event store {path}: {exc.strerror or exc}; check that the "
            "directory exists and is writable by this process",
            path,
        ) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StoreCorruptError(f"the event store path {path} is not a regular file", path)
        header = os.read(fd, len(_HEADER))
        if header and header != _HEADER:
            raise StoreCorruptError(
                f"{path} is not an SQLite database (corrupt, or another kind of file); "
                "point the store at a new file or restore it from a backup",
                path,
            )
        if info.st_mode & 0o077:
            try:
                os.fchmod(fd, _FILE_MODE)
            except OSError:
                logger.warning("could not restrict the event store file to mode 0600")
    finally:
        os.close(fd)


def _tighten_sidecars(path: str) -> None:
    for suffix in ("-wal", "-shm"):
        try:
            os.chmod(path + suffix, _FILE_MODE)
        except FileNotFoundError:
            pass
        except OSError:
            logger.warning("could not restrict the event store %s file to mode 0600", suffix)


def open_writer(path: str, synchronous: str) -> tuple[sqlite3.Connection, int]:
    """Open the single write connection: create/validate the file, WAL, schema.

    Returns the connection and the schema version the file had (0: new file).
    """
    if sqlite3.sqlite_version_info < _MIN_SQLITE:
        raise StoreError(
            f"the event store needs SQLite >= {'.'.join(map(str, _MIN_SQLITE))} with JSON "
            f"support; this Python links SQLite {sqlite3.sqlite_version}",
            path,
        )
    _prepare_file(path)
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"cannot switch the event store {path} to WAL journal mode (got {mode!r}); "
                "the file system may not support the shared memory WAL needs",
                path,
            )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("SELECT json('[]')")
        previous = ensure_schema(conn, path)
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, (sqlite3.Error, OSError)):
            raise translate_error(exc, path, "open the event store") from exc
        raise
    _tighten_sidecars(path)
    if 0 < previous < SCHEMA_VERSION:
        logger.info("event store schema migrated from version %d to %d", previous, SCHEMA_VERSION)
    return conn, previous


class ReaderPool:
    """Query-only connections handed to whichever thread reads; returned after use.

    WAL lets readers run while the writer commits; each read sees the last commit.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            raise translate_error(exc, self._path, "read the event store") from exc
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """Borrow a reader; SQLite errors become StoreError naming the path."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise translate_error(exc, self._path, "read the event store") from exc
        finally:
            with self._lock:
                keep = not self._closed and len(self._idle) < 8
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
