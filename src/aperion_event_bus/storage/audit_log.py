"""The 1.x JSONL audit log: one redacted event per line, with size-based rotation.

``AuditLogger(log_path, ...)`` appends every logged event to ``log_path`` as one
compact JSON line (the keys of ``Event.to_jsonl()``), after redacting its payload
and source with the redaction engine. Guarantees:

* A line is handed to the operating system before ``log_event`` returns, so a
  reader that opens the file right after ``emit`` sees it. The file (and every
  rotated file) has mode 0600.
* Rotation keeps files under ``max_size_bytes``: before a write that would push
  ``x.jsonl`` over the limit, ``x.jsonl`` becomes ``x.1.jsonl`` (``x.1`` becomes
  ``x.2`` ... up to ``x.{max_files}.jsonl``, the oldest is deleted). A single
  line longer than the limit is written alone into a fresh file.
* ``read_events`` reads newest first across the current and rotated files,
  backwards in blocks, so it finds events anywhere in the logs. Lines that are
  not events (a torn last line after a crash, foreign text) are skipped and
  counted; they never hide other events. A torn last line is also terminated
  before the next append so it cannot swallow the next event.
* A string with no UTF-8 form (a lone surrogate such as ``"\\ud800"``) is written
  as its JSON escape, so the line stays valid and reads back as logged.
* A payload that cannot be written as JSON even after redaction is logged in a
  fallback form instead of being dropped: the payload becomes
  ``{"_unserialisable": "<redacted repr, truncated>", "_error": "<type: message>"}``
  and ``get_stats()["serialization_fallbacks"]`` counts it.

With ``log_path=None`` nothing is written to disk: the logger keeps the last
``memory_buffer_size`` events in memory (redacted when read), so ``read_events``
still answers. Pass ``memory_buffer_size=0`` to keep nothing.
"""

from __future__ import annotations

import collections
import datetime as _dt
import importlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from .._frozen import thaw
from .._json import dumps
from .._wiring import library_logger
from ..errors import ConfigurationError
from ..events import ENVELOPE_FIELDS, Event

__all__ = ["AuditLogger", "RedactorLike"]

logger = library_logger("aperion_event_bus.audit")

_FILE_MODE = 0o600
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_READ_BLOCK = 64 * 1024
_REPR_LIMIT = 2000
_ERROR_LIMIT = 500
_WARN_INTERVAL_S = 60.0


@runtime_checkable
class RedactorLike(Protocol):
    """What the audit log needs from a redactor (``aperion_event_bus.redaction.Redactor``)."""

    def redact_string(self, value: str) -> str: ...

    def redact(self, data: Any) -> Any: ...


def default_redactor(owner: str) -> RedactorLike:
    """A default ``aperion_event_bus.redaction.Redactor()``; a clear error when unavailable."""
    try:
        module = importlib.import_module("aperion_event_bus.redaction")
        redactor: RedactorLike = module.Redactor()
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"{owner} redacts by default with aperion_event_bus.redaction.Redactor, which "
            f"could not be imported ({exc}); pass redactor=<object with redact() and "
            "redact_string()> explicitly"
        ) from exc
    return redactor


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[truncated {len(text) - limit} chars]"


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the event
        return f"<unrepresentable {type(value).__qualname__}: {type(exc).__name__}>"


def redacted_record(event: Event, redactor: RedactorLike) -> tuple[str, bool]:
    """The audit line for ``event`` (without newline) and whether the fallback form was used."""
    record: dict[str, Any] = {f: getattr(event, f) for f in ENVELOPE_FIELDS}
    try:
        record["payload"] = redactor.redact(thaw(event.payload))
        if event.source is not None:
            record["source"] = redactor.redact_string(event.source)
        return dumps(record), False
    except Exception as exc:  # unserialisable value or a failing redactor: fallback form
        error = f"{type(exc).__name__}: {exc}"
        try:
            shown = redactor.redact_string(_truncate(_safe_repr(thaw(event.payload)), _REPR_LIMIT))
            error = redactor.redact_string(error)
            source = event.source
            if source is not None:
                source = redactor.redact_string(source)
        except Exception:  # the redactor itself fails: write nothing of the payload
            shown, error, source = "<redaction failed>", f"{type(exc).__name__}", None
        record["payload"] = {
            "_unserialisable": shown,
            "_error": _truncate(error, _ERROR_LIMIT),
        }
        record["source"] = source
        return dumps(record), True


def iter_lines_reversed(fh: BinaryIO, end: int, block_size: int = _READ_BLOCK) -> Iterator[bytes]:
    """Yield the lines of ``fh[:end]`` last to first, without ``\\n``; blank lines are skipped.

    Reads backwards in blocks of ``block_size`` bytes, so the cost is proportional
    to how far back the caller reads, not to the file size.
    """
    pos = end
    tail = b""
    while pos > 0:
        start = max(0, pos - block_size)
        fh.seek(start)
        chunk = fh.read(pos - start)
        if len(chunk) != pos - start:  # the file shrank under us: stop cleanly
            return
        pos = start
        parts = (chunk + tail).split(b"\n")
        tail = parts[0]
        for i in range(len(parts) - 1, 0, -1):
            if parts[i].strip():
                yield parts[i]
    if tail.strip():
        yield tail


class AuditLogger:
    """Append-only JSONL audit log of events, redacted, rotated by size, thread-safe.

    ``AuditLogger(log_path=None, enabled=True, redactor=None, max_size_bytes=None,
    max_files=5, *, memory_buffer_size=1000)``. ``redactor=None`` means
    ``aperion_event_bus.redaction.Redactor()``; any object with ``redact(obj)`` and
    ``redact_string(s)`` works. See the module docstring for the guarantees.
    """

    def __init__(
        self,
        log_path: str | os.PathLike[str] | None = None,
        enabled: bool = True,
        redactor: RedactorLike | None = None,
        max_size_bytes: int | None = None,
        max_files: int = 5,
        *,
        memory_buffer_size: int = 1000,
    ) -> None:
        if max_size_bytes is not None and max_size_bytes <= 0:
            raise ConfigurationError(
                f"max_size_bytes must be a positive number of bytes or None, got {max_size_bytes!r}"
            )
        if max_files < 0:
            raise ConfigurationError(f"max_files must be >= 0, got {max_files!r}")
        if memory_buffer_size < 0:
            raise ConfigurationError(f"memory_buffer_size must be >= 0, got {memory_buffer_size!r}")
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self.enabled = enabled
        self.redactor: RedactorLike = (
            redactor if redactor is not None else default_redactor("AuditLogger")
        )
        self.max_size_bytes = max_size_bytes
        self.max_files = max_files
        self.memory_buffer_size = memory_buffer_size

        self._lock = threading.Lock()
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._memory: collections.deque[Event] = collections.deque(maxlen=memory_buffer_size)
        self._logged = 0
        self._rotations = 0
        self._write_errors = 0
        self._fallbacks = 0
        self._skipped_lines = 0
        self._last_read_skipped = 0
        self._torn_lines_repaired = 0
        self._last_error: str | None = None
        self._last_warning = 0.0

    # ------------------------------------------------------------------ writing

    def log_event(self, event: Event) -> None:
        """Append ``event`` (redacted) to the log; never raises for I/O or encoding problems."""
        if not self.enabled:
            return
        if self.log_path is None:
            with self._lock:
                if self.memory_buffer_size:
                    self._memory.append(event)
                self._logged += 1
            return
        line, fallback = redacted_record(event, self.redactor)
        # A lone surrogate (no UTF-8 form) can only stand inside a JSON string, where
        # "backslashreplace" writes its JSON escape (\ud800): the line stays valid.
        data = (line + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            if fallback:
                self._fallbacks += 1
            try:
                self._write_locked(self.log_path, data)
            except OSError as exc:
                self._write_errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                self._close_locked()  # reopen (and repair a partial line) next time
                self._warn_locked(f"audit log write to {self.log_path} failed: {self._last_error}")
                return
            self._logged += 1

    def _write_locked(self, path: Path, data: bytes) -> None:
        size = self._current_size_locked(path)
        limit = self.max_size_bytes
        if limit is not None and size > 0 and size + len(data) > limit:
            self._rotate_locked(path)
            size = self._current_size_locked(path)
        fd = self._fd
        assert fd is not None
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def _current_size_locked(self, path: Path) -> int:
        """Size of the file at ``path``, (re)opening it when it is not the one we hold."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is None or self._fd is None or (st.st_dev, st.st_ino) != self._ident:
            self._close_locked()
            return self._open_locked(path)
        return st.st_size

    def _open_locked(self, path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | _O_CLOEXEC | _O_BINARY
        fd = os.open(path, flags, _FILE_MODE)
        try:
            _restrict_mode(fd)
            st = os.fstat(fd)
            size = st.st_size
            if size > 0:
                os.lseek(fd, -1, os.SEEK_END)
                if os.read(fd, 1) != b"\n":  # torn last line: terminate it first
                    os.write(fd, b"\n")
                    size += 1
                    self._torn_lines_repaired += 1
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._ident = (st.st_dev, st.st_ino)
        return size

    def _close_locked(self) -> None:
        fd, self._fd, self._ident = self._fd, None, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _rotate_locked(self, path: Path) -> None:
        self._close_locked()
        if self.max_files == 0:
            _unlink_quietly(path)
        else:
            _unlink_quietly(self._rotated_path(path, self.max_files))
            for index in range(self.max_files - 1, 0, -1):
                older = self._rotated_path(path, index)
                if older.exists():
                    os.replace(older, self._rotated_path(path, index + 1))
            os.replace(path, self._rotated_path(path, 1))
        self._rotations += 1

    @staticmethod
    def _rotated_path(path: Path, index: int) -> Path:
        return path.with_name(f"{path.stem}.{index}{path.suffix}")

    def _rotated_files(self) -> list[Path]:
        """Existing rotated files, newest (``.1``) first: the names rotation writes.

        That is ``{stem}.{n}{suffix}`` with ``n`` in ``1..max_files`` written as
        ``str(n)``, plus leftovers of an earlier, larger ``max_files``: ``n`` beyond
        it while the numbers run on without a gap. Look-alikes such as
        ``x.20240101.jsonl``, ``x.01.jsonl`` or ``x.0.jsonl`` are not the logger's:
        never read, never deleted.
        """
        path = self.log_path
        if path is None:
            return []
        prefix, suffix = f"{path.stem}.", path.suffix
        numbered: dict[int, Path] = {}
        try:
            candidates = list(path.parent.iterdir())
        except OSError:
            return []
        for candidate in candidates:
            name = candidate.name
            if not name.startswith(prefix) or not name.endswith(suffix):
                continue
            middle = name[len(prefix) : len(name) - len(suffix)] if suffix else name[len(prefix) :]
            if middle.isascii() and middle.isdigit() and middle[0] != "0" and candidate.is_file():
                numbered[int(middle)] = candidate
        ours = [n for n in sorted(numbered) if n <= self.max_files]
        n = self.max_files + 1
        while n in numbered:
            ours.append(n)
            n += 1
        return [numbered[n] for n in ours]

    def _warn_locked(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_INTERVAL_S or self._write_errors == 1:
            self._last_warning = now
            logger.warning("%s (write errors so far: %d)", message, self._write_errors)

    def flush(self, *, fsync: bool = False) -> None:
        """Lines are already handed to the OS on write; ``fsync=True`` also syncs the disk."""
        with self._lock:
            if fsync and self._fd is not None:
                os.fsync(self._fd)

    def close(self) -> None:
        """Close the file handle; a later ``log_event`` reopens the file."""
        with self._lock:
            self._close_locked()

    def __enter__(self) -> AuditLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def read_events(
        self,
        event_type: str | None = None,
        since: float | _dt.datetime | None = None,
        limit: int | None = 100,
        *,
        until: float | _dt.datetime | None = None,
        correlation_id: str | None = None,
    ) -> list[Event]:
        """Logged events, newest first, across the current and rotated files.

        ``since``/``until`` bound the event timestamp (inclusive; Unix seconds or an
        aware datetime); ``limit=None`` returns every match. Lines that are not
        events are skipped and counted in ``get_stats()["skipped_lines"]``.
        """
        if limit is not None and limit <= 0:
            return []
        since_ts = _as_timestamp(since)
        until_ts = _as_timestamp(until)

        def wanted(event: Event) -> bool:
            if event_type is not None and event.event_type != event_type:
                return False
            if since_ts is not None and event.timestamp < since_ts:
                return False
            if until_ts is not None and event.timestamp > until_ts:
                return False
            return correlation_id is None or event.correlation_id == correlation_id

        if self.log_path is None:
            return self._read_memory(wanted, limit)

        handles = self._snapshot_files()
        results: list[Event] = []
        skipped = 0
        try:
            for fh, end in handles:
                for line in iter_lines_reversed(fh, end):
                    try:
                        event = Event.from_jsonl(line)
                    except Exception:
                        # any line that is not an event (bad JSON, nested past the
                        # recursion limit, a number out of range, ...) is skipped and
                        # counted: it must never hide the other events
                        skipped += 1
                        continue
                    if wanted(event):
                        results.append(event)
                        if limit is not None and len(results) >= limit:
                            return results
        finally:
            for fh, _ in handles:
                fh.close()
            with self._lock:
                self._skipped_lines += skipped
                self._last_read_skipped = skipped
        return results

    def _snapshot_files(self) -> list[tuple[BinaryIO, int]]:
        """Open the current and rotated files (newest first) under the lock.

        Open handles keep pointing at the same data even if a rotation renames the
        files while we read, so a read never sees a line twice or misses a file.
        """
        path = self.log_path
        assert path is not None
        handles: list[tuple[BinaryIO, int]] = []
        with self._lock:
            for candidate in [path, *self._rotated_files()]:
                try:
                    fh = open(candidate, "rb")  # noqa: SIM115 - closed by the caller
                except OSError:
                    continue
                handles.append((fh, os.fstat(fh.fileno()).st_size))
        return handles

    def _read_memory(self, wanted: Callable[[Event], bool], limit: int | None) -> list[Event]:
        with self._lock:
            buffered = list(self._memory)
        results: list[Event] = []
        for event in reversed(buffered):
            if not wanted(event):
                continue
            line, _ = redacted_record(event, self.redactor)
            results.append(Event.from_jsonl(line))
            if limit is not None and len(results) >= limit:
                break
        return results

    # ------------------------------------------------------------------ housekeeping

    def clear(self) -> bool:
        """Delete the log and its rotated files (the names ``_rotated_files`` lists:
        a look-alike such as ``x.20240101.jsonl`` is left alone), or empty the
        memory buffer."""
        with self._lock:
            self._memory.clear()
            self._logged = 0
            path = self.log_path
            if path is None:
                return True
            self._close_locked()
            ok = True
            for candidate in [path, *self._rotated_files()]:
                try:
                    candidate.unlink(missing_ok=True)
                except OSError as exc:
                    ok = False
                    self._last_error = f"{type(exc).__name__}: {exc}"
            return ok

    def get_stats(self) -> dict[str, Any]:
        """Counters and file sizes (cheap: no file is read).

        ``total_events_logged`` counts the events this logger wrote since it was
        created or last cleared; ``log_file_size`` is the current file's size and
        ``total_size_bytes`` includes the rotated files.
        """
        with self._lock:
            stats: dict[str, Any] = {
                "enabled": self.enabled,
                "log_path": str(self.log_path) if self.log_path is not None else None,
                "storage": "file" if self.log_path is not None else "memory",
                "total_events_logged": self._logged,
                "log_file_size": 0,
                "rotated_files": 0,
                "total_size_bytes": 0,
                "max_size_bytes": self.max_size_bytes,
                "max_files": self.max_files,
                "rotations": self._rotations,
                "write_errors": self._write_errors,
                "serialization_fallbacks": self._fallbacks,
                "skipped_lines": self._skipped_lines,
                "last_read_skipped_lines": self._last_read_skipped,
                "torn_lines_repaired": self._torn_lines_repaired,
                "last_error": self._last_error,
                "redactor": type(self.redactor).__name__,
            }
            if self.log_path is None:
                stats["buffered_events"] = len(self._memory)
                return stats
            rotated = self._rotated_files()
            size = _size_or_zero(self.log_path)
            stats["log_file_size"] = size
            stats["rotated_files"] = len(rotated)
            stats["total_size_bytes"] = size + sum(_size_or_zero(p) for p in rotated)
            return stats


def _as_timestamp(value: float | _dt.datetime | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    return float(value)


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _restrict_mode(fd: int) -> None:
    fchmod = getattr(os, "fchmod", None)
    if fchmod is not None:
        try:
            fchmod(fd, _FILE_MODE)
        except OSError:  # e.g. a file owned by someone else: keep going
            pass
