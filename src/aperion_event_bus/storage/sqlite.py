"""SQLiteStore: the embedded durable event store (stdlib ``sqlite3``, WAL, group commit).

What it keeps: every appended event (original payload, in publish order), one
pending delivery per (event, durable subscription name) until it is acknowledged,
the attempt count of each delivery, dead deliveries, and dead-letter entries.

How it writes: one writer thread owns the write connection and commits whatever is
queued in one transaction (see ``_writer``); ``await store.append(...)`` returns
once the event is committed and never blocks the event loop. Reads use a pool of
query-only connections (WAL lets them run beside the writer).

    store = SQLiteStore("var/events.db", synchronous="NORMAL").open()
    await store.append(event, durable_names=["billing"])
    for event, attempts in store.pending_deliveries("billing"): ...
    await store.ack(event.event_id, "billing")
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, Self

from .._runtime import running_loop
from ..errors import ConfigurationError
from ..events import Event
from . import _ops
from ._append import append
from ._batch import BATCH_LIMIT, CommitBatch, append_batches
from ._connections import ReaderPool, open_writer
from ._dlq import SQLiteDLQBackend
from ._errors import StoreClosedError, StoreCorruptError, StoreError
from ._one_statement import OneStatementCommit
from ._replay import EventQuery, decode_page, pending_page
from ._retention import CompactionJob, CompactionReport, compact_handler
from ._schema import SCHEMA_VERSION
from ._writer import BatchHandler, GroupCommitWriter, Op, SyncWaiter, Then

__all__ = [
    "CompactionReport",
    "SQLiteDLQBackend",
    "SQLiteStore",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreStats",
]

Synchronous = Literal["NORMAL", "FULL"]
_COMPACT = "compact"
_FLUSH = "flush"
_APPEND_BATCH = "append_batch"
_PAGE = 1000


@dataclasses.dataclass(frozen=True)
class StoreStats:
    """Counters of the writer thread (since ``open``).

    ``transactions``: commits (one per batch); ``ops``: queued operations committed;
    ``events_written``: append units (events) in those ops; ``largest_batch``: most
    ops in one transaction; ``loop_callbacks``: ``call_soon_threadsafe`` calls made to
    wake event loops (at most one per loop per batch); ``queued``: ops waiting now;
    ``checkpoints``: WAL checkpoints run by the writer between batches (see ``_wal``);
    ``wal_pages``: WAL pages appended since the last of them.
    """

    transactions: int
    failed_transactions: int
    ops: int
    events_written: int
    largest_batch: int
    loop_callbacks: int
    queued: int
    checkpoints: int = 0
    wal_pages: int = 0


def _flush(conn: Any, runs: list[Any]) -> list[Any]:
    return [None] * len(runs)


def _names(durable_names: Sequence[str]) -> tuple[str, ...]:
    if not durable_names:
        return ()
    if isinstance(durable_names, str):
        durable_names = (durable_names,)
    names = tuple(durable_names)
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"durable subscription names must be non-empty strings, got {name!r}")
    return names


def _check_event(event: object) -> None:
    if not isinstance(event, Event):
        raise TypeError(f"the store appends Event objects, not {type(event).__name__}")


class SQLiteStore:
    """Durable event log + pending deliveries + DLQ in one SQLite file (mode 0600).

    ``synchronous``: ``"NORMAL"`` (default) survives a process crash (kill -9) but
    the last commits can be lost on power failure; ``"FULL"`` fsyncs every commit
    and survives both. ``max_batch``: most events (or other ops) per transaction.
    ``max_age_seconds``/``max_bytes``: retention, applied by ``compact()`` and every
    ``compact_interval_seconds`` by the writer; ``force_retention`` lets periodic
    retention delete events with unacknowledged deliveries (logged and counted).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        max_batch: int = 1000,
        max_age_seconds: float | None = None,
        max_bytes: int | None = None,
        compact_interval_seconds: float = 60.0,
        force_retention: bool = False,
    ) -> None:
        path = os.fspath(path)
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ConfigurationError(
                f"SQLiteStore needs a file path, got {path!r}: the writer thread and the readers "
                "use separate connections, which cannot share an in-memory database; use a "
                "file in a temporary directory instead"
            )
        sync = str(synchronous).upper()
        if sync not in ("NORMAL", "FULL"):
            raise ConfigurationError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigurationError(f"max_batch must be a positive integer, got {max_batch!r}")
        if max_age_seconds is not None and max_age_seconds <= 0:
            raise ConfigurationError("max_age_seconds must be positive (or None)")
        if max_bytes is not None and max_bytes <= 0:
            raise ConfigurationError("max_bytes must be positive (or None)")
        if compact_interval_seconds <= 0:
            raise ConfigurationError("compact_interval_seconds must be positive")
        self._path = path
        self.synchronous: Synchronous = "FULL" if sync == "FULL" else "NORMAL"
        self.max_batch = max_batch
        self._batch_limit = min(BATCH_LIMIT, max_batch)  # appends per loop-side batch
        self.max_age_seconds = max_age_seconds
        self.max_bytes = max_bytes
        self.compact_interval_seconds = compact_interval_seconds
        self.force_retention = force_retention
        self._writer: GroupCommitWriter | None = None
        # appends of the current loop iteration, one open batch per event loop (a
        # store may serve buses on several loops; each loop touches only its own key)
        self._open_batches: dict[asyncio.AbstractEventLoop, CommitBatch] = {}
        self._reader_pool: ReaderPool | None = None
        self._lock = threading.Lock()
        self._dlq: SQLiteDLQBackend | None = None  # see dlq_backend
        self._closed = False
        #: The schema version the file had when opened (0: created now; None: not opened).
        self.previous_schema_version: int | None = None

    # -- construction ------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """``sqlite:///relative/events.db`` or ``sqlite:////abs/events.db`` (SQLAlchemy style).

        Query parameters set options: ``?synchronous=FULL&max_batch=500&max_age_seconds=86400
        &max_bytes=1000000000&compact_interval_seconds=60``; keyword ``options`` win.
        ``sqlite:///:memory:`` is rejected (see the class doc).
        """
        if not isinstance(url, str) or not url.startswith("sqlite:///"):
            raise ConfigurationError(
                f"not an SQLite store URL: {url!r}; use sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        raw_path, _, query = url[len("sqlite:///") :].partition("?")
        path = urllib.parse.unquote(raw_path)
        parsed: dict[str, Any] = {}
        converters: dict[str, Any] = {
            "synchronous": str,
            "max_batch": int,
            "max_age_seconds": float,
            "max_bytes": int,
            "compact_interval_seconds": float,
        }
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if key not in converters:
                raise ConfigurationError(
                    f"unknown SQLite store URL option {key!r}; known: {', '.join(converters)}"
                )
            try:
                parsed[key] = converters[key](value)
            except ValueError:
                raise ConfigurationError(f"bad value for {key} in store URL: {value!r}") from None
        parsed.update(options)
        return cls(path, **parsed)

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._closed

    def open(self) -> Self:
        """Create/validate the file, migrate the schema, start the writer. Idempotent.

        Raises StoreCorruptError for a corrupt or foreign file, StoreError when the file
        cannot be created or written (e.g. a read-only directory).
        """
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"the event store {self._path} was closed", self._path)
            if self._writer is not None:
                return self
            conn, previous = open_writer(self._path, self.synchronous)
            self.previous_schema_version = previous
            handlers: dict[str, BatchHandler] = dict(_ops.HANDLERS)
            handlers[_COMPACT] = compact_handler
            handlers[_FLUSH] = _flush
            seqs = _ops.RecentSeqs()  # acks by seq (see RecentSeqs)
            handlers[_ops.APPEND] = functools.partial(append, seqs=seqs)
            handlers[_APPEND_BATCH] = functools.partial(append_batches, seqs=seqs)
            handlers[_ops.ACK] = _ops.make_ack(seqs)
            retention = self.max_age_seconds is not None or self.max_bytes is not None
            writer = GroupCommitWriter(
                conn,
                self._path,
                handlers,
                max_batch=self.max_batch,
                timer=self._periodic_compaction if retention else None,
                timer_interval=self.compact_interval_seconds if retention else None,
                on_outcome=lambda committed: seqs.commit() if committed else seqs.rollback(),
                one_statement=OneStatementCommit(conn, seqs, _APPEND_BATCH, _ops.ACK, _ops.ATTEMPT),
                pipeline=self.synchronous == "NORMAL",
            )
            self._reader_pool = ReaderPool(self._path)
            writer.start()
            self._writer = writer
        return self

    def close(self, timeout: float | None = None) -> None:
        """Commit everything queued (pending appends and acks), then release the file."""
        self._queue_open_batch()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            writer, readers = self._writer, self._reader_pool
        # Readers first, so the writer's is the last connection: closing it then
        # checkpoints the WAL into the database and removes the -wal file.
        if readers is not None:
            readers.close()
        if writer is not None:
            writer.close(timeout)

    async def aclose(self) -> None:
        """``close()`` in a worker thread (it waits for the last commit)."""
        self._queue_open_batch()
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.open)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "open" if self.is_open else ("closed" if self._closed else "not opened")
        return f"SQLiteStore({self._path!r}, synchronous={self.synchronous!r}, {state})"

    # -- plumbing ----------------------------------------------------------------

    def _active_writer(self) -> GroupCommitWriter:
        writer = self._writer
        if writer is None or self._closed:
            if self._closed:
                raise StoreClosedError(f"the event store {self._path} is closed", self._path)
            raise StoreClosedError(
                f"the event store {self._path} is not open; call store.open() first", self._path
            )
        return writer

    def _readers(self) -> ReaderPool:
        self._active_writer()
        assert self._reader_pool is not None
        return self._reader_pool

    def _submit_async(self, kind: str, args: Any, weight: int = 1) -> asyncio.Future[Any]:
        """Queue an op; its result arrives in a future of the running loop. The loop's
        open batch of appends goes first: ops commit in the order they were made."""
        writer = self._active_writer()
        loop = asyncio.get_running_loop()
        if self._open_batches:
            self._queue_open_batch()
        future: asyncio.Future[Any] = loop.create_future()
        writer.submit(Op(kind, args, future, loop, None, weight))
        return future

    async def _call(self, kind: str, args: Any, weight: int = 1) -> Any:
        return await self._submit_async(kind, args, weight)

    def _call_sync(
        self, kind: str, args: Any, weight: int = 1, then: Callable[[Any], None] | None = None
    ) -> Any:
        """Queue an op and block until it is committed; ``then(result)`` runs on the
        writer thread first (see ``Then``)."""
        writer = self._active_writer()
        if threading.get_ident() == writer.thread_ident:
            raise RuntimeError("the store's writer thread cannot wait for its own commit")
        waiter = SyncWaiter()
        sync = waiter if then is None else Then(then, waiter)
        writer.submit(Op(kind, args, sync=sync, weight=weight))
        return waiter.wait()

    def _call_nowait(self, kind: str, args: Any, then: Callable[[Any], None] | None = None) -> None:
        """Queue an op and return at once, from any thread (a loop thread included). It
        commits in order with what was queued before it (the running loop's open batch
        of appends too); ``then(result)`` runs on the writer thread once it committed
        or failed (without ``then`` a failure is logged)."""
        writer = self._active_writer()
        if self._open_batches:
            self._queue_open_batch()
        writer.submit(Op(kind, args, sync=Then(then) if then is not None else None))

    # -- appends -------------------------------------------------------------------

    async def append(self, event: Event, durable_names: Sequence[str] = ()) -> None:
        """Store ``event`` (+ one pending delivery per durable name); returns once committed.

        Raises StoreError if the commit failed (the event is then not stored). If the
        awaiting task is cancelled, the append may still be committed. Appends made in
        one loop iteration are committed together (as the bus's publishes are).
        """
        _check_event(event)
        batch, index = self.join_commit(event, _names(durable_names))
        await batch.committed(index)

    def join_commit(self, event: Event, durable_names: tuple[str, ...]) -> tuple[CommitBatch, int]:
        """``append`` minus its argument checks, joined to the running loop's open batch:
        returns the batch and the append's index in it. All appends of a batch are
        committed together and share ``batch.future``; see ``_batch`` for how to await
        it (the bus does). For callers that pass an ``Event`` and a tuple of valid
        names. Call it on a running event loop."""
        loop = asyncio.get_running_loop()
        batch = self._open_batches.get(loop)
        if batch is None:
            self._active_writer()  # raises once closed
            batch = self._open_batches[loop] = CommitBatch(loop)
            loop.call_soon(self._queue_batch, batch)
        entries = batch.entries
        entries.append(((event,), durable_names))
        if len(entries) >= self._batch_limit:
            self._queue_batch(batch)
        return batch, len(entries) - 1

    def _queue_batch(self, batch: CommitBatch) -> None:
        """Hand ``batch`` to the writer (on its loop's thread; once)."""
        if batch.queued:
            return
        batch.queued = True
        if self._open_batches.get(batch.loop) is batch:
            del self._open_batches[batch.loop]
        try:
            self._active_writer().submit(
                Op(_APPEND_BATCH, batch, batch, batch.loop, None, len(batch.entries))
            )
        except StoreError as exc:
            batch.set_exception(exc)

    def _queue_open_batch(self) -> None:
        """Queue the open batch now if it belongs to the loop running in this thread
        (``flush`` and ``close`` must come after the appends made before them)."""
        loop = running_loop()
        batch = self._open_batches.get(loop) if loop is not None else None
        if batch is not None:
            self._queue_batch(batch)

    def append_sync(self, event: Event, durable_names: Sequence[str] = ()) -> None:
        """``append`` for plain threads: blocks until committed (do not call on a loop thread)."""
        _check_event(event)
        self._call_sync(_ops.APPEND, ((event,), _names(durable_names)))

    async def append_many(self, events: Iterable[Event], durable_names: Sequence[str] = ()) -> None:
        """Store several events (same durable names for each) in one transaction."""
        batch = tuple(events)
        for event in batch:
            _check_event(event)
        if batch:
            await self._call(_ops.APPEND, (batch, _names(durable_names)), weight=len(batch))

    def append_many_sync(self, events: Iterable[Event], durable_names: Sequence[str] = ()) -> None:
        """Blocking ``append_many``."""
        batch = tuple(events)
        for event in batch:
            _check_event(event)
        if batch:
            self._call_sync(_ops.APPEND, (batch, _names(durable_names)), weight=len(batch))

    async def flush(self) -> None:
        """Wait until everything queued before this call (e.g. ``ack_nowait``) is committed."""
        self._queue_open_batch()
        await self._call(_FLUSH, None)

    def flush_sync(self) -> None:
        """Blocking ``flush``."""
        self._call_sync(_FLUSH, None)

    # -- deliveries ----------------------------------------------------------------

    async def ack(self, event_id: str, name: str) -> None:
        """Acknowledge a delivery: it is no longer pending (unknown pairs are ignored)."""
        await self._call(_ops.ACK, (event_id, name))

    def ack_sync(self, event_id: str, name: str) -> None:
        """Blocking ``ack``."""
        self._call_sync(_ops.ACK, (event_id, name))

    def ack_nowait(self, event_id: str, name: str) -> None:
        """Queue an ack and return at once; it commits with the next batch (errors are logged).

        At-least-once: if the process dies before that commit, the event is redelivered.
        """
        self._active_writer().defer(_ops.ACK, (event_id, name))

    async def record_attempt(self, event_id: str, name: str) -> int:
        """Count one more delivery attempt and return the new count (0: not pending).

        Call it before running the handler, so an attempt that crashes the process counts.
        """
        return int(await self._call(_ops.ATTEMPT, (event_id, name)))

    def record_attempt_nowait(self, event_id: str, name: str) -> None:
        """Queue one more delivery attempt and return at once (commits with the next batch).

        The bus uses it for first deliveries: the attempt is normally committed long
        before a handler that crashes the process could have done so."""
        self._active_writer().defer(_ops.ATTEMPT, (event_id, name))

    def record_attempt_sync(self, event_id: str, name: str) -> int:
        """Blocking ``record_attempt``."""
        return int(self._call_sync(_ops.ATTEMPT, (event_id, name)))

    async def dead(self, event_id: str, name: str, error: str) -> None:
        """Give up on a delivery: move it out of pending into ``dead_deliveries``.

        ``error`` is stored as given; pass text that is already redacted.
        """
        await self._call(_ops.DEAD, (event_id, name, str(error)))

    def dead_sync(self, event_id: str, name: str, error: str) -> None:
        """Blocking ``dead``."""
        self._call_sync(_ops.DEAD, (event_id, name, str(error)))

    def dead_nowait(self, event_id: str, name: str, error: str) -> None:
        """Queue a ``dead`` and return at once (also on a loop thread): it commits in
        order after what was queued before it, normally with the next group commit
        (a failure is logged). Until then the delivery is still pending."""
        self._call_nowait(_ops.DEAD, (event_id, name, str(error)))

    nack = dead
    nack_sync = dead_sync

    def pending_deliveries(self, name: str, limit: int | None = None) -> list[tuple[Event, int]]:
        """Unacknowledged deliveries for ``name`` in publish order, as (event, attempts)."""
        found: list[tuple[Event, int]] = []
        after = 0
        with self._readers().connection() as conn:
            while limit is None or len(found) < limit:
                want = _PAGE if limit is None else min(_PAGE, limit - len(found))
                page, last = pending_page(conn, name, after, want)
                if last is None:
                    break
                found.extend(page)
                after = last
        return found

    def pending_count(self, name: str | None = None) -> int:
        """Number of unacknowledged deliveries (for one name, or all)."""
        with self._readers().connection() as conn:
            if name is None:
                row = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()
            else:
                row = conn.execute(
                    "SELECT COUNT(*) FROM deliveries WHERE name = ?", (name,)
                ).fetchone()
        return int(row[0])

    def pending_names(self) -> list[str]:
        """Durable subscription names that have unacknowledged deliveries."""
        with self._readers().connection() as conn:
            return [
                r[0] for r in conn.execute("SELECT DISTINCT name FROM deliveries ORDER BY name")
            ]

    def dead_count(self, name: str | None = None) -> int:
        """Number of deliveries moved out of pending with ``dead``/``nack``."""
        with self._readers().connection() as conn:
            if name is None:
                row = conn.execute("SELECT COUNT(*) FROM dead_deliveries").fetchone()
            else:
                row = conn.execute(
                    "SELECT COUNT(*) FROM dead_deliveries WHERE name = ?", (name,)
                ).fetchone()
        return int(row[0])

    # -- replay --------------------------------------------------------------------

    def iter_events(
        self,
        since: float | None = None,
        until: float | None = None,
        types: Sequence[str] | None = None,
        correlation_id: str | None = None,
        batch_size: int = 1000,
    ) -> Iterator[Event]:
        """Stored events in publish order, filtered; reads ``batch_size`` rows at a time.

        ``since``/``until``: Unix times, inclusive. ``types``: exact names or patterns
        (``*``, ``domain.*``, ``*.action``). Events appended after the iteration started
        are not included.
        """
        query = _replay_query(since, until, types, correlation_id, batch_size)
        if query is None:
            return
        readers = self._readers()
        with readers.connection() as conn:
            after, last = query.bounds(conn)
        while after < last:
            with readers.connection() as conn:
                events, seen = query.page(conn, after, last, batch_size)
            if seen is None:
                return
            yield from events
            after = seen

    async def aiter_events(
        self,
        since: float | None = None,
        until: float | None = None,
        types: Sequence[str] | None = None,
        correlation_id: str | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[Event]:
        """``iter_events`` for async code: each page is read in a worker thread
        (the next page is fetched while the current one is consumed)."""
        async for events in self.aiter_pages(since, until, types, correlation_id, batch_size):
            for event in events:
                yield event

    async def aiter_pages(
        self,
        since: float | None = None,
        until: float | None = None,
        types: Sequence[str] | None = None,
        correlation_id: str | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[list[Event]]:
        """``aiter_events`` a page (a list of up to ``batch_size`` events) at a time,
        for consumers that handle a page in one go (``EventBus.replay``)."""
        query = _replay_query(since, until, types, correlation_id, batch_size)
        if query is None:
            return
        readers = self._readers()

        def bounds() -> tuple[int, int]:
            with readers.connection() as conn:
                return query.bounds(conn)

        def page(after: int, last: int) -> tuple[list[Event], int | None]:
            with readers.connection() as conn:
                return query.page(conn, after, last, batch_size)

        after, last = await asyncio.to_thread(bounds)
        if after >= last:
            return
        pending = asyncio.ensure_future(asyncio.to_thread(page, after, last))
        try:
            while True:
                events, seen = await pending
                if seen is None:
                    return
                after = seen
                more = after < last
                if more:
                    pending = asyncio.ensure_future(asyncio.to_thread(page, after, last))
                if events:
                    yield events
                if not more:
                    return
        finally:
            if not pending.done():
                pending.cancel()

    def get_event(self, event_id: str) -> Event | None:
        """The stored event with this id, or None."""
        with self._readers().connection() as conn:
            row = conn.execute("SELECT body FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return decode_page(row[0])[0] if row is not None else None

    def count_events(self) -> int:
        """Number of stored events."""
        with self._readers().connection() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    # -- retention -----------------------------------------------------------------

    def _job(
        self, max_age_seconds: float | None, max_bytes: int | None, force: bool
    ) -> CompactionJob:
        age = self.max_age_seconds if max_age_seconds is None else max_age_seconds
        size = self.max_bytes if max_bytes is None else max_bytes
        if age is not None and age < 0:
            raise ValueError("max_age_seconds must be >= 0")
        if size is not None and size < 0:
            raise ValueError("max_bytes must be >= 0")
        return CompactionJob(age, size, force=force)

    def compact(
        self,
        max_age_seconds: float | None = None,
        max_bytes: int | None = None,
        *,
        force: bool = False,
    ) -> CompactionReport:
        """Delete acknowledged events older than ``max_age_seconds`` and, oldest first,
        beyond ``max_bytes`` (defaults: the store's settings). Blocks until done.

        Events with unacknowledged deliveries are kept unless ``force=True`` (then the
        deletion is logged as a warning and counted in the report).
        """
        result = self._call_sync(_COMPACT, self._job(max_age_seconds, max_bytes, force))
        assert isinstance(result, CompactionReport)
        return result

    async def acompact(
        self,
        max_age_seconds: float | None = None,
        max_bytes: int | None = None,
        *,
        force: bool = False,
    ) -> CompactionReport:
        """``compact`` for async code (runs on the writer thread, the loop is not blocked)."""
        result = await self._call(_COMPACT, self._job(max_age_seconds, max_bytes, force))
        assert isinstance(result, CompactionReport)
        return result

    def _periodic_compaction(self) -> None:
        """Runs on the writer thread every ``compact_interval_seconds`` (queues a job)."""
        writer = self._writer
        if writer is None or self._closed:
            return
        job = CompactionJob(self.max_age_seconds, self.max_bytes, force=self.force_retention)
        try:
            writer.submit(Op(_COMPACT, job))
        except StoreClosedError:
            pass

    # -- DLQ, stats ----------------------------------------------------------------

    def dlq_backend(self) -> SQLiteDLQBackend:
        """The ``DLQBackend`` keeping dead-letter entries in this store (one per store:
        it keeps the entry count and the entries put without waiting)."""
        self._active_writer()
        with self._lock:
            backend = self._dlq
            if backend is None:
                backend = self._dlq = SQLiteDLQBackend(self)
        return backend

    def stats(self) -> StoreStats:
        """Writer counters; ``transactions`` grows by one per group commit."""
        writer = self._writer
        if writer is None:
            return StoreStats(0, 0, 0, 0, 0, 0, 0)
        return StoreStats(
            transactions=writer.transactions,
            failed_transactions=writer.failed_transactions,
            ops=writer.ops,
            events_written=writer.units.get(_ops.APPEND, 0) + writer.units.get(_APPEND_BATCH, 0),
            largest_batch=writer.largest_batch,
            loop_callbacks=writer.loop_callbacks,
            queued=writer.queued,
            checkpoints=writer.checkpoints,
            wal_pages=writer.wal_pages(),
        )

    @property
    def schema_version(self) -> int:
        """The schema version this code writes (files are migrated to it on open)."""
        return SCHEMA_VERSION


def _replay_query(
    since: float | None,
    until: float | None,
    types: Sequence[str] | None,
    correlation_id: str | None,
    batch_size: int,
) -> EventQuery | None:
    """The query of a paged read; None when nothing can match."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of events, not {batch_size}")
    query = EventQuery(since, until, types, correlation_id)
    return None if query.empty else query
