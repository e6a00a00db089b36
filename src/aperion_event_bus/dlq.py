"""Dead letter queue: failed deliveries kept for inspection, export and retry.

``DeadLetterQueue(max_size=10000, persist_path=None, *, backend=None)`` keeps
``FailedEvent`` entries in a ``DLQBackend``: in memory by default, in an
append-only JSONL file with ``persist_path`` (survives restarts), or any other
backend implementing the protocol (the SQLite store provides one).

Retry runs only the handler that failed, through the bus's
``retry_delivery(event, *, subscription_id=None, handler_name=None) -> bool``
(``retry``/``retry_all``, from sync code) or its awaitable twin
``aretry_delivery`` (``aretry``/``aretry_all``, from async code: waiting for a
handler on a loop thread would block that loop, so the sync ones refuse to run
there). A retry that fails again returns False and keeps the same entry with
``retry_count`` increased by one; ``retry_all`` skips entries that reached
``max_retries``.

Entries hold the original (unredacted) event so it can be delivered again; the
JSONL file is created with mode 0600. ``export`` writes redacted JSONL.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import enum
import functools
import inspect
import io
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar, cast, runtime_checkable

from ._ids import new_id
from ._json import dumps, loads, storable
from ._runtime import running_loop
from ._wiring import library_logger
from .errors import ConfigurationError, EventBusError, ValidationError
from .events import Event

__all__ = [
    "DLQBackend",
    "DeadLetterQueue",
    "FailedEvent",
    "FailureReason",
    "JSONLDLQBackend",
    "MemoryDLQBackend",
]

logger = library_logger("aperion_event_bus.dlq")

_FILE_MODE = 0o600
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_REPR_LIMIT = 2000
_T = TypeVar("_T")


class FailureReason(enum.StrEnum):
    """Why an event ended up in the dead letter queue."""

    HANDLER_ERROR = "handler_error"
    HANDLER_TIMEOUT = "handler_timeout"
    ALL_HANDLERS_FAILED = "all_handlers_failed"
    VALIDATION_ERROR = "validation_error"
    SERIALIZATION_ERROR = "serialization_error"


def _reason(value: FailureReason | str) -> FailureReason:
    try:
        return FailureReason(value)
    except ValueError:
        valid = ", ".join(r.value for r in FailureReason)
        raise ValidationError(
            f"unknown DLQ failure reason {value!r}; expected one of {valid}"
        ) from None


@dataclasses.dataclass
class FailedEvent:
    """One dead-letter entry: the event, why and where it failed, and its retry history."""

    id: str
    event: Event
    reason: FailureReason
    error: str
    handler_name: str | None = None
    timestamp: float = dataclasses.field(default_factory=time.time)
    retry_count: int = 0
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reason = _reason(self.reason)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (the event as ``Event.to_dict()``, the reason as its string value)."""
        return {
            "id": self.id,
            "event": self.event.to_dict(),
            "reason": self.reason.value,
            "error": self.error,
            "handler_name": self.handler_name,
            "timestamp": self.timestamp,
            "retry_count": self.retry_count,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FailedEvent:
        """Rebuild an entry from ``to_dict()`` output (or its parsed JSON)."""
        try:
            event_data = data["event"]
            if not isinstance(event_data, Mapping):
                raise ValidationError("a DLQ entry's 'event' must be an object")
            metadata = data.get("metadata") or {}
            if not isinstance(metadata, Mapping):
                raise ValidationError("a DLQ entry's 'metadata' must be an object")
            return cls(
                id=str(data["id"]),
                event=Event.from_dict(event_data),
                reason=_reason(data["reason"]),
                error=str(data.get("error", "")),
                handler_name=data.get("handler_name"),
                timestamp=float(data["timestamp"]),
                retry_count=int(data.get("retry_count", 0)),
                metadata=dict(metadata),
            )
        except KeyError as exc:
            raise ValidationError(f"a DLQ entry is missing the field {exc.args[0]!r}") from None

    def copy(self) -> FailedEvent:
        """A copy whose metadata can be changed independently (the event is immutable)."""
        return dataclasses.replace(self, metadata=dict(self.metadata))


@runtime_checkable
class DLQBackend(Protocol):
    """Where a DeadLetterQueue keeps its entries.

    "Newest first" means most recently ``put`` first (entries are stamped when
    added, so this is timestamp order). ``update`` replaces an existing entry in
    place (it does nothing for an unknown id). Implementations must be safe to call
    from several threads; the queue also serialises its own compound operations.
    """

    def put(self, entry: FailedEvent) -> None: ...

    def get(self, id: str) -> FailedEvent | None: ...

    def list(
        self,
        limit: int | None = None,
        event_type: str | None = None,
        reason: str | None = None,
    ) -> builtins.list[FailedEvent]: ...

    def update(self, entry: FailedEvent) -> None: ...

    def remove(self, id: str) -> bool: ...

    def clear(self) -> int: ...

    def clear_older_than(self, cutoff_ts: float) -> int: ...

    def size(self) -> int: ...

    def oldest(self) -> FailedEvent | None: ...


class MemoryDLQBackend:
    """Entries in an insertion-ordered dict; copies go in and out."""

    def __init__(self) -> None:
        self._entries: dict[str, FailedEvent] = {}
        self._lock = threading.RLock()

    def put(self, entry: FailedEvent) -> None:
        with self._lock:
            self._entries.pop(entry.id, None)  # a re-put moves the entry to the newest end
            self._entries[entry.id] = entry.copy()

    def get(self, id: str) -> FailedEvent | None:
        with self._lock:
            entry = self._entries.get(id)
            return entry.copy() if entry is not None else None

    def list(
        self,
        limit: int | None = None,
        event_type: str | None = None,
        reason: str | None = None,
    ) -> builtins.list[FailedEvent]:
        if limit is not None and limit <= 0:
            return []
        with self._lock:
            found: builtins.list[FailedEvent] = []
            for entry in reversed(self._entries.values()):
                if event_type is not None and entry.event.event_type != event_type:
                    continue
                if reason is not None and entry.reason != reason:
                    continue
                found.append(entry.copy())
                if limit is not None and len(found) >= limit:
                    break
            return found

    def update(self, entry: FailedEvent) -> None:
        with self._lock:
            if entry.id in self._entries:
                self._entries[entry.id] = entry.copy()

    def remove(self, id: str) -> bool:
        with self._lock:
            return self._entries.pop(id, None) is not None

    def clear(self) -> int:
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            return count

    def clear_older_than(self, cutoff_ts: float) -> int:
        with self._lock:
            old = [k for k, e in self._entries.items() if e.timestamp < cutoff_ts]
            for key in old:
                del self._entries[key]
            return len(old)

    def size(self) -> int:
        with self._lock:
            return len(self._entries)

    def oldest(self) -> FailedEvent | None:
        with self._lock:
            for entry in self._entries.values():
                return entry.copy()
            return None


class JSONLDLQBackend:
    """Memory backend plus an append-only JSONL journal at ``path`` (mode 0600).

    Each change appends one line: ``{"op": "put"|"update", "entry": {...}}``,
    ``{"op": "remove", "id": ...}``, ``{"op": "clear"}`` or
    ``{"op": "clear_older_than", "cutoff": ts}``. Opening replays the journal; lines
    that cannot be read (a torn last line after a crash, foreign text) are skipped
    and counted in ``skipped_lines``. The journal is rewritten compactly (atomically,
    via a temporary file) when it holds many more lines than live entries.
    Lines are handed to the OS before each call returns; ``fsync=True`` also syncs
    each line to disk. One process should own a journal file at a time.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._memory = MemoryDLQBackend()
        self._lock = threading.RLock()
        self._fd: int | None = None
        self._lines = 0
        self.skipped_lines = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self._load()
        if self.skipped_lines or self._lines > 2 * self._memory.size() + 1000:
            self._compact()

    # -- journal -------------------------------------------------------------

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return
        applied = 0
        first_line: bytes | None = None
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            first_line = line if first_line is None else first_line
            self._lines += 1
            try:
                self._apply(loads(line))
                applied += 1
            except (ValueError, TypeError, KeyError, EventBusError):
                self.skipped_lines += 1
        if first_line is not None and not applied and not first_line.startswith(b'{"op"'):
            raise ConfigurationError(
                f"{self.path} is not a dead letter queue journal (no line could be read as "
                "one); point persist_path at a new file or at a journal this DLQ wrote"
            )
        if self.skipped_lines:
            logger.warning(
                "DLQ journal %s: skipped %d unreadable line(s)", self.path, self.skipped_lines
            )

    def _apply(self, record: Any) -> None:
        if not isinstance(record, dict):
            raise ValidationError("a DLQ journal line must hold a JSON object")
        op = record["op"]
        if op == "put":
            self._memory.put(FailedEvent.from_dict(record["entry"]))
        elif op == "update":
            self._memory.update(FailedEvent.from_dict(record["entry"]))
        elif op == "remove":
            self._memory.remove(str(record["id"]))
        elif op == "clear":
            self._memory.clear()
        elif op == "clear_older_than":
            self._memory.clear_older_than(float(record["cutoff"]))
        else:
            raise ValidationError(f"unknown DLQ journal operation {op!r}")

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | _O_CLOEXEC | _O_BINARY
            fd = os.open(self.path, flags, _FILE_MODE)
            try:
                _restrict_mode(fd)
                if os.fstat(fd).st_size > 0:
                    os.lseek(fd, -1, os.SEEK_END)
                    if os.read(fd, 1) != b"\n":  # torn last line: terminate it
                        os.write(fd, b"\n")
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def _append(self, record: dict[str, Any]) -> None:
        """Journal one change; failures are logged and counted (memory stays authoritative)."""
        try:
            data = (storable(dumps(record)) + "\n").encode("utf-8")
            fd = self._open()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
            self._lines += 1
        except (OSError, ValueError, TypeError, EventBusError) as exc:
            self.write_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._close()
            logger.warning("DLQ journal %s: write failed: %s", self.path, self.last_error)
            return
        if self._lines > 2 * self._memory.size() + 1000:
            self._compact()

    def _compact(self) -> None:
        entries = self._memory.list()
        entries.reverse()  # oldest first, so replay restores the order
        tmp = self.path.with_name(f"{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC | _O_BINARY
            fd = os.open(tmp, flags, _FILE_MODE)
            try:
                _restrict_mode(fd)
                with os.fdopen(fd, "wb", closefd=False) as fh:
                    for entry in entries:
                        line = dumps({"op": "put", "entry": entry.to_dict()})
                        fh.write(storable(line).encode("utf-8") + b"\n")
                    fh.flush()
                    os.fsync(fd)
            finally:
                os.close(fd)
            self._close()
            os.replace(tmp, self.path)
        except (OSError, ValueError, TypeError, EventBusError) as exc:
            self.write_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.warning("DLQ journal %s: compaction failed: %s", self.path, self.last_error)
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return
        self._lines = len(entries)

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        """Close the journal file (it is reopened on the next change)."""
        with self._lock:
            self._close()

    # -- DLQBackend ----------------------------------------------------------

    def put(self, entry: FailedEvent) -> None:
        with self._lock:
            self._memory.put(entry)
            self._append({"op": "put", "entry": entry.to_dict()})

    def get(self, id: str) -> FailedEvent | None:
        return self._memory.get(id)

    def list(
        self,
        limit: int | None = None,
        event_type: str | None = None,
        reason: str | None = None,
    ) -> builtins.list[FailedEvent]:
        return self._memory.list(limit, event_type, reason)

    def update(self, entry: FailedEvent) -> None:
        with self._lock:
            if self._memory.get(entry.id) is None:
                return
            self._memory.update(entry)
            self._append({"op": "update", "entry": entry.to_dict()})

    def remove(self, id: str) -> bool:
        with self._lock:
            removed = self._memory.remove(id)
            if removed:
                self._append({"op": "remove", "id": id})
            return removed

    def clear(self) -> int:
        with self._lock:
            count = self._memory.clear()
            self._append({"op": "clear"})
            return count

    def clear_older_than(self, cutoff_ts: float) -> int:
        with self._lock:
            count = self._memory.clear_older_than(cutoff_ts)
            if count:
                self._append({"op": "clear_older_than", "cutoff": cutoff_ts})
            return count

    def size(self) -> int:
        return self._memory.size()

    def oldest(self) -> FailedEvent | None:
        return self._memory.oldest()


class DeadLetterQueue:
    """Thread-safe store of failed deliveries with the 1.x API.

    ``DeadLetterQueue(max_size=10000, persist_path=None, *, backend=None)``: when
    full, adding evicts the oldest entry (counted in ``get_stats()["evicted"]`` and
    logged as a warning). ``persist_path`` selects the JSONL journal backend;
    ``backend`` any ``DLQBackend`` (not both).
    """

    def __init__(
        self,
        max_size: int = 10000,
        persist_path: str | os.PathLike[str] | None = None,
        *,
        backend: DLQBackend | None = None,
    ) -> None:
        if max_size <= 0:
            raise ConfigurationError(f"max_size must be a positive number, got {max_size!r}")
        if backend is not None and persist_path is not None:
            raise ConfigurationError(
                "pass either persist_path (JSONL journal) or backend, not both"
            )
        self.max_size = max_size
        self.persist_path: Path | None = Path(persist_path) if persist_path is not None else None
        if backend is None:
            backend = (
                JSONLDLQBackend(self.persist_path)
                if self.persist_path is not None
                else MemoryDLQBackend()
            )
        self.backend: DLQBackend = backend
        self._lock = threading.RLock()
        self._retrying: set[str] = set()
        self._evicted = 0
        with self._lock:
            self._evict_locked(self.max_size)

    def _evict_locked(self, keep: int) -> None:
        while self.backend.size() > keep:
            victim = self.backend.oldest()
            if victim is None or not self.backend.remove(victim.id):
                break
            self._evicted += 1
            logger.warning(
                "DLQ full (max_size=%d): evicted oldest entry %s (event %s, type %s)",
                self.max_size,
                victim.id,
                victim.event.event_id,
                victim.event.event_type,
            )

    # -- adding and reading --------------------------------------------------

    def add(
        self,
        event: Event,
        reason: FailureReason | str,
        error: str | BaseException,
        handler_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        subscription_id: str | None = None,
        subscription_name: str | None = None,
    ) -> str:
        """Store a failed delivery and return its ``dlq_...`` id.

        ``subscription_id``/``subscription_name`` (or the same keys in ``metadata``)
        let ``retry`` target exactly the subscription that failed.
        """
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        meta = dict(metadata) if metadata else {}
        if subscription_id is not None:
            meta["subscription_id"] = subscription_id
        if subscription_name is not None:
            meta["subscription_name"] = subscription_name
        entry = FailedEvent(
            id=new_id("dlq_"),
            event=event,
            reason=_reason(reason),
            error=str(error),
            handler_name=handler_name,
            metadata=meta,
        )
        with self._lock:
            self._evict_locked(self.max_size - 1)
            self.backend.put(entry)
        logger.info(
            "event %s (%s) added to the DLQ as %s: reason %s, handler %s",
            event.event_id,
            event.event_type,
            entry.id,
            entry.reason.value,
            handler_name,
        )
        return entry.id

    def get(self, entry_id: str) -> FailedEvent | None:
        """The entry with this id (a copy), or None."""
        return self.backend.get(entry_id)

    def get_all(self, limit: int | None = 100) -> list[FailedEvent]:
        """Entries, newest first."""
        return self.backend.list(limit=limit)

    def get_by_event_type(self, event_type: str, limit: int | None = 100) -> list[FailedEvent]:
        """Entries for one event type, newest first."""
        return self.backend.list(limit=limit, event_type=event_type)

    def get_by_reason(
        self, reason: FailureReason | str, limit: int | None = 100
    ) -> list[FailedEvent]:
        """Entries with one failure reason (enum or its string value), newest first."""
        return self.backend.list(limit=limit, reason=_reason(reason).value)

    def remove(self, entry_id: str) -> bool:
        """Delete an entry; False when there is none with this id."""
        with self._lock:
            return self.backend.remove(entry_id)

    def size(self) -> int:
        """Number of entries."""
        return self.backend.size()

    def __len__(self) -> int:
        return self.size()

    # -- retry ----------------------------------------------------------------

    def retry(self, entry_id: str, bus: Any, remove_on_success: bool = True) -> bool:
        """Deliver the entry's event again to the handler that failed, synchronously.

        Calls ``bus.retry_delivery(event, subscription_id=..., handler_name=...)``.
        True: it succeeded (the entry is removed, or kept with ``retry_count + 1``
        when ``remove_on_success`` is False). False: unknown id, a retry of the same
        entry already running, or the handler failed again; then the entry stays,
        with ``retry_count + 1`` and the new error when the bus reports one.

        It waits for the handler, so it cannot be called on a thread running an
        event loop (it raises EventBusError there): use ``await dlq.aretry(...)``.
        """
        _refuse_on_loop("retry(entry_id, bus)", "aretry(entry_id, bus)")
        deliver = _retry_delivery_of(bus)
        entry = self._claim(entry_id)
        if entry is None:
            return False
        try:
            try:
                outcome: Any = deliver(entry.event, **_delivery_hints(entry, deliver))
            except Exception as exc:
                outcome = exc
            return self._record_retry(entry, outcome, remove_on_success)
        finally:
            self._unclaim(entry_id)

    async def aretry(self, entry_id: str, bus: Any, remove_on_success: bool = True) -> bool:
        """``retry`` for async code, on any event loop (the bus's own included).

        Same semantics and result as ``retry``. It awaits
        ``bus.aretry_delivery(...)`` (a bus with only ``retry_delivery`` is called in a
        worker thread); entries kept in a file or the store are read and updated in a
        worker thread too. Once started, a retry runs to the end and its outcome is
        recorded even if the awaiting task is cancelled.
        """
        deliver, method = _aretry_delivery_of(bus)
        entry = await self._off_loop(self._claim, entry_id)
        if entry is None:
            return False
        hints = _delivery_hints(entry, method)
        return await asyncio.shield(self._aretry_claimed(entry, deliver, hints, remove_on_success))

    async def _aretry_claimed(
        self,
        entry: FailedEvent,
        deliver: Callable[..., Awaitable[Any]],
        hints: dict[str, Any],
        remove_on_success: bool,
    ) -> bool:
        try:
            try:
                outcome: Any = await deliver(entry.event, **hints)
            except Exception as exc:
                outcome = exc
            return await self._off_loop(self._record_retry, entry, outcome, remove_on_success)
        finally:
            self._unclaim(entry.id)

    def retry_all(
        self, bus: Any, max_retries: int = 3, remove_on_success: bool = True
    ) -> dict[str, bool]:
        """Retry every entry whose ``retry_count`` is below ``max_retries``, oldest first.

        Not on a thread running an event loop (EventBusError): use ``aretry_all``."""
        _refuse_on_loop("retry_all(bus)", "aretry_all(bus)")
        return {
            entry_id: self.retry(entry_id, bus, remove_on_success)
            for entry_id in self._due(max_retries)
        }

    async def aretry_all(
        self, bus: Any, max_retries: int = 3, remove_on_success: bool = True
    ) -> dict[str, bool]:
        """``retry_all`` for async code: the entries are retried one after another with
        ``aretry``."""
        return {
            entry_id: await self.aretry(entry_id, bus, remove_on_success)
            for entry_id in await self._off_loop(self._due, max_retries)
        }

    def _due(self, max_retries: int) -> list[str]:
        """Ids of the entries ``retry_all`` retries, oldest first."""
        entries = self.backend.list()
        entries.reverse()
        return [entry.id for entry in entries if entry.retry_count < max_retries]

    def _claim(self, entry_id: str) -> FailedEvent | None:
        """The entry, marked as being retried; None when unknown or already being retried."""
        with self._lock:
            entry = self.backend.get(entry_id)
            if entry is None or entry_id in self._retrying:
                return None
            self._retrying.add(entry_id)
            return entry

    def _unclaim(self, entry_id: str) -> None:
        with self._lock:
            self._retrying.discard(entry_id)

    def _record_retry(self, entry: FailedEvent, outcome: Any, remove_on_success: bool) -> bool:
        """Apply a retry's outcome (the bus's answer, or the exception it raised) to
        the entry: removed, or kept with ``retry_count + 1``. Returns success."""
        new_error: str | None
        if isinstance(outcome, Exception):
            ok, new_error = False, f"{type(outcome).__name__}: {outcome}"
        else:
            ok, new_error = _outcome(outcome)
        with self._lock:
            current = self.backend.get(entry.id)
            if current is not None:  # else removed or cleared meanwhile: nothing to update
                if ok and remove_on_success:
                    self.backend.remove(entry.id)
                else:
                    current.retry_count += 1
                    current.metadata["last_retry"] = time.time()
                    current.metadata["last_retry_succeeded"] = ok
                    if not ok:
                        current.error = new_error or current.error
                    self.backend.update(current)
        logger.info(
            "DLQ retry of %s (event %s) %s",
            entry.id,
            entry.event.event_id,
            "succeeded" if ok else "failed again",
        )
        return ok

    async def _off_loop(self, func: Callable[..., _T], *args: Any) -> _T:
        """Run ``func`` in a worker thread unless the entries are only in memory (a
        file or store backend would make the loop wait for the disk)."""
        if type(self.backend) is MemoryDLQBackend:
            return func(*args)
        return await asyncio.to_thread(func, *args)

    # -- housekeeping ----------------------------------------------------------

    def clear(self) -> int:
        """Delete every entry; returns how many there were."""
        with self._lock:
            return self.backend.clear()

    def clear_older_than(self, hours: float = 24) -> int:
        """Delete entries added more than ``hours`` ago; returns how many."""
        with self._lock:
            return self.backend.clear_older_than(time.time() - hours * 3600)

    def get_stats(self) -> dict[str, Any]:
        """``size, max_size, by_reason, by_event_type, oldest_timestamp, newest_timestamp``
        plus ``evicted`` and ``backend``."""
        entries = self.backend.list()
        by_reason: dict[str, int] = {}
        by_event_type: dict[str, int] = {}
        for entry in entries:
            by_reason[entry.reason.value] = by_reason.get(entry.reason.value, 0) + 1
            etype = entry.event.event_type
            by_event_type[etype] = by_event_type.get(etype, 0) + 1
        stamps = [e.timestamp for e in entries]
        stats: dict[str, Any] = {
            "size": len(entries),
            "max_size": self.max_size,
            "by_reason": by_reason,
            "by_event_type": by_event_type,
            "oldest_timestamp": min(stamps) if stamps else None,
            "newest_timestamp": max(stamps) if stamps else None,
            "evicted": self._evicted,
            "backend": type(self.backend).__name__,
        }
        if isinstance(self.backend, JSONLDLQBackend):
            stats["persist_path"] = str(self.backend.path)
            stats["persist_skipped_lines"] = self.backend.skipped_lines
        write_errors = getattr(self.backend, "write_errors", None)
        if isinstance(write_errors, int):  # the JSONL journal, the store
            stats["persist_write_errors"] = write_errors
        return stats

    # -- export ----------------------------------------------------------------

    def export(
        self,
        path_or_file: str | os.PathLike[str] | IO[str] | IO[bytes],
        redactor: Any = None,
        *,
        limit: int | None = None,
    ) -> int:
        """Write the entries (oldest first) as redacted JSONL; returns the number written.

        ``redactor=None`` uses ``aperion_event_bus.redaction.Redactor()``; any object with
        ``redact(obj)`` and ``redact_string(s)`` works. The payload, source, error text
        and metadata are redacted; ids, types and timestamps are kept. A path is
        created (or truncated) with mode 0600. Values JSON cannot hold are written in
        the fallback form ``{"_unserialisable": "<redacted repr>", "_error": "..."}``.
        """
        if redactor is None:
            from .storage.audit_log import default_redactor

            redactor = default_redactor("DeadLetterQueue.export")
        entries = self.backend.list(limit=limit)
        entries.reverse()
        lines = [_export_line(entry, redactor) for entry in entries]
        if isinstance(path_or_file, (str, os.PathLike)):
            path = Path(path_or_file)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC | _O_BINARY
            fd = os.open(path, flags, _FILE_MODE)
            _restrict_mode(fd)
            with os.fdopen(fd, "wb") as fh:
                for line in lines:
                    fh.write(storable(line).encode("utf-8") + b"\n")
        else:
            out: Any = path_or_file
            binary = _is_binary(out)
            for line in lines:
                line = storable(line)
                out.write(line.encode("utf-8") + b"\n" if binary else line + "\n")
            out.flush()
        return len(lines)


def _is_binary(fh: Any) -> bool:
    if isinstance(fh, (io.RawIOBase, io.BufferedIOBase)):
        return True
    if isinstance(fh, io.TextIOBase):
        return False
    mode = getattr(fh, "mode", "")
    return isinstance(mode, str) and "b" in mode


def _outcome(value: Any) -> tuple[bool, str | None]:
    """Interpret ``retry_delivery``'s return: a bool, or a result with ``success``/``error``."""
    if isinstance(value, bool):
        return value, None
    success = getattr(value, "success", None)
    if isinstance(success, bool):
        error = getattr(value, "error", None)
        if isinstance(error, BaseException):
            return success, f"{type(error).__name__}: {error}"
        return success, str(error) if error else None
    return bool(value), None


def _refuse_on_loop(call: str, instead: str) -> None:
    if running_loop() is not None:
        raise EventBusError(
            f"DeadLetterQueue.{call} was called on a thread running an event loop: it waits "
            "for the handler, which would block that loop (and never finish when it is the "
            f"bus's own loop); in async code use `await dlq.{instead}`"
        )


def _retry_delivery_of(bus: Any) -> Callable[..., Any]:
    retry_delivery = getattr(bus, "retry_delivery", None)
    if not callable(retry_delivery):
        raise ConfigurationError(
            f"{type(bus).__name__} has no retry_delivery(event, *, subscription_id, "
            "handler_name) method; pass an aperion_event_bus EventBus"
        )
    return cast(Callable[..., Any], retry_delivery)


def _aretry_delivery_of(bus: Any) -> tuple[Callable[..., Awaitable[Any]], Callable[..., Any]]:
    """``bus.aretry_delivery``, or its sync ``retry_delivery`` run in a worker thread;
    and the bus method whose keywords it takes."""
    aretry_delivery = getattr(bus, "aretry_delivery", None)
    if callable(aretry_delivery):
        return cast(Callable[..., Awaitable[Any]], aretry_delivery), aretry_delivery
    retry_delivery = _retry_delivery_of(bus)
    return functools.partial(asyncio.to_thread, retry_delivery), retry_delivery


def _delivery_hints(entry: FailedEvent, method: Callable[..., Any]) -> dict[str, Any]:
    """What tells the bus which subscription to run again: always the id and the
    handler name; the subscription's ``name`` and patterns (recorded by 2.x buses)
    when the bus's ``method`` takes them (a bus written against the two-keyword
    contract keeps working)."""
    meta = entry.metadata
    hints: dict[str, Any] = {
        "subscription_id": meta.get("subscription_id"),
        "handler_name": entry.handler_name or meta.get("subscription_name"),
    }
    extra = {"subscription_name": meta.get("subscription_name")}
    patterns = meta.get("subscription_patterns")
    if isinstance(patterns, list) and all(isinstance(p, str) for p in patterns):
        extra["patterns"] = patterns
    extra = {key: value for key, value in extra.items() if value is not None}
    if extra:
        try:
            params = inspect.signature(method).parameters
        except (TypeError, ValueError):
            return hints
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        hints.update(
            (key, value) for key, value in extra.items() if takes_any or key in params
        )
    return hints


def _export_line(entry: FailedEvent, redactor: Any) -> str:
    data = entry.to_dict()
    event = data["event"]
    try:
        event["payload"] = redactor.redact(event["payload"])
        if event.get("source") is not None:
            event["source"] = redactor.redact_string(event["source"])
        data["error"] = redactor.redact_string(data["error"])
        data["metadata"] = redactor.redact(data["metadata"])
        return dumps(data)
    except Exception as exc:  # unserialisable value or failing redactor: fallback form
        try:
            shown = redactor.redact_string(_truncate(_safe_repr(entry.event.payload)))
            error = redactor.redact_string(f"{type(exc).__name__}: {exc}")
            source = entry.event.source
            source = redactor.redact_string(source) if source is not None else None
            message = redactor.redact_string(entry.error)
        except Exception:
            shown, error, source, message = "<redaction failed>", type(exc).__name__, None, ""
        data = entry.to_dict()
        data["event"]["payload"] = {"_unserialisable": shown, "_error": _truncate(error)}
        data["event"]["source"] = source
        data["error"] = message
        data["metadata"] = {"_unserialisable": "metadata omitted"}
        return dumps(data)


def _truncate(text: str, limit: int = _REPR_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...[truncated {len(text) - limit} chars]"


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return f"<unrepresentable {type(value).__qualname__}: {type(exc).__name__}>"


def _restrict_mode(fd: int) -> None:
    fchmod = getattr(os, "fchmod", None)
    if fchmod is not None:
        try:
            fchmod(fd, _FILE_MODE)
        except OSError:
            pass
