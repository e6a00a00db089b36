"""Group commit: one thread owns the write connection and commits queued work in batches.

Callers never touch the write connection. They put an ``Op`` on a queue and wait
(an asyncio future, a lock for plain threads, or nothing for fire-and-forget).
The writer thread takes everything queued, up to ``max_batch`` units of work,
runs it in ONE transaction (one commit, one fsync with ``synchronous=FULL``) and
then settles every waiter: per event loop a single ``call_soon_threadsafe``
completes all of that loop's futures of the batch.

Consecutive ops of the same kind are handed to their handler together, so a
handler can turn a whole run of appends or acks into one SQL statement. That
matters beyond speed: ``sqlite3`` releases the GIL for every statement step, and
re-taking it while the event loop thread is busy can cost a full switch interval
(5 ms); one statement per run of ops keeps the writer from stalling on the GIL.

Fire-and-forget work nobody waits for (acks, first attempt records) does not go
through the queue: ``defer`` puts it on a side list that the writer empties into
the *next* transaction, ahead of that batch's queued ops, one handler call per
kind. On the bus's hot path every publish is followed by the ack of its delivery;
through the queue they would alternate (append, ack, append, ...) and cost a
statement each, while folded they cost one statement per batch. A deferred op is
committed with the next transaction, whatever started it (a later append, a
``flush``, ``close``, or the wake-up ``defer`` queues when the side list was empty).

The commonest transaction (the bus's commit batches plus one range of acks) runs
as ONE statement in autocommit mode (``_one_statement``), the whole transaction
inside one GIL-free ``sqlite3_step``. Its waiters are woken later than the general
path's: just before the next transaction's statement starts when more work is
queued (so the loop runs their tasks while SQLite works), else right away.

If the transaction fails (disk full, read-only file, I/O error) it is rolled back
and every op of the batch fails with the same ``StoreError``: nothing in it was
committed, and no waiter is told otherwise (failed deferred ops are logged).
"""

from __future__ import annotations

import _thread
import asyncio
import collections
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from .._wiring import library_logger
from ._connections import translate_error
from ._errors import StoreClosedError, StoreError
from ._one_statement import OneStatementCommit, Prepared
from ._wal import IDLE_SECONDS, WalCheckpointer

__all__ = [
    "RESUBMIT",
    "BatchHandler",
    "GroupCommitWriter",
    "LoopWaiter",
    "Op",
    "Settles",
    "SyncWaiter",
    "Then",
]

logger = library_logger("aperion_event_bus.storage")

#: A handler returns this for an op that has more work to do in a later batch.
RESUBMIT: Final = object()

#: ``handler(conn, args_of_consecutive_ops) -> one result per op`` (an exception
#: instance as a result fails just that op).
BatchHandler = Callable[[sqlite3.Connection, list[Any]], list[Any]]


class LoopWaiter(Protocol):
    """What an op's ``future`` must offer: an ``asyncio.Future``, or anything settled
    like one on its loop (``_batch.CommitBatch``)."""

    def done(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class Settles(Protocol):
    """What an op's ``sync`` must offer: ``settle(result)``, called on the writer thread
    once the op's transaction committed (its result) or failed (the exception), in
    the order the ops were committed. ``SyncWaiter`` wakes a waiting thread; an op
    nobody waits for can pass its own (e.g. to keep a count, or to report a failure)."""

    def settle(self, result: Any, /) -> None: ...


class SyncWaiter:
    """Blocks a plain thread until the writer settles its op (a pre-acquired lock)."""

    __slots__ = ("_lock", "result")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self.result: Any = None

    def settle(self, result: Any) -> None:
        self.result = result
        self._lock.release()

    def wait(self) -> Any:
        self._lock.acquire()
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


class Then:
    """Settle target of an op nobody (or a ``waiter``) waits for: ``callback(result)``
    runs on the writer thread, in commit order (``result`` is an exception instance
    when the op failed), then ``waiter`` is woken. A failing callback is logged."""

    __slots__ = ("callback", "waiter")

    def __init__(self, callback: Callable[[Any], None], waiter: SyncWaiter | None = None) -> None:
        self.callback = callback
        self.waiter = waiter

    def settle(self, result: Any) -> None:
        try:
            self.callback(result)
        except Exception:
            logger.exception("event store: a commit callback failed")
        if self.waiter is not None:
            self.waiter.settle(result)


class Op:
    """One unit of queued work: a kind (handler key), its arguments, and who waits."""

    __slots__ = ("args", "future", "kind", "loop", "sync", "weight")

    def __init__(  # positional calls are the cheaper ones (one per append)
        self,
        kind: str,
        args: Any,
        future: LoopWaiter | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        sync: Settles | None = None,
        weight: int = 1,
    ) -> None:
        self.kind = kind
        self.args = args
        self.future = future
        self.loop = loop
        self.sync = sync
        self.weight = weight


_STOP: Final = Op("__stop__", None)
#: Queued by ``defer`` to wake an idle writer; carries no work itself.
_WAKE: Final = Op("__wake__", None, weight=0)

#: Op weight (events) settled per loop callback. Completing a future schedules its
#: task(s), and the loop runs every task made ready in one iteration before it
#: looks at timers again; settling a batch of 1,000 in one go would stall the loop
#: for all 1,000 task steps. In chunks, each iteration runs about this many: one
#: loop-side batch (``_batch.BATCH_LIMIT``); with 128 the ticker's p99 delay in
#: ``benchmarks/durable.py`` was 1.6-2.0 ms, with 32 0.9-1.3 ms, at the same rate.
SETTLE_CHUNK: Final = 32


def _settle_futures(items: list[tuple[LoopWaiter, Any, int]], start: int = 0) -> None:
    """Runs on the caller's loop: complete the futures of one batch, a chunk per call."""
    end = start
    weight = 0
    count = len(items)
    while end < count and weight < SETTLE_CHUNK:
        weight += items[end][2]
        end += 1
    if end < count:
        asyncio.get_running_loop().call_soon(_settle_futures, items, end)
    for i in range(start, end):
        future, result, _ = items[i]
        if future.done():  # the awaiting task was cancelled
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class GroupCommitWriter:
    """The writer thread. ``submit`` from any thread; ``close`` flushes and joins."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        handlers: Mapping[str, BatchHandler],
        *,
        max_batch: int,
        timer: Callable[[], None] | None = None,
        timer_interval: float | None = None,
        on_outcome: Callable[[bool], None] | None = None,
        one_statement: OneStatementCommit | None = None,
        pipeline: bool = False,
    ) -> None:
        self._conn = conn
        # the common commit as one statement (see _one_statement), and the last such
        # commit's (ops, results, units) until its waiters are woken
        self._one_statement = one_statement
        #: split the work in hand into two transactions that take turns (NORMAL only:
        #: with FULL each transaction costs an fsync); see _split_pipeline
        self.pipeline = pipeline
        self._unsettled: tuple[list[Op], list[Any], int] | None = None
        self._carry: list[Op] = []  # taken from the queue, left for the next transaction
        # did the last transaction commit as one statement? (splitting pays only then)
        self._one_statement_took_last = True
        self._last_active = time.monotonic()
        # told after each transaction whether it committed (True) or was rolled back
        self._on_outcome = on_outcome
        self._path = path
        self._handlers = dict(handlers)
        self._max_batch = max_batch
        self._timer = timer
        self._timer_interval = timer_interval
        self._queue: queue.SimpleQueue[Op] = queue.SimpleQueue()
        self._deferred: collections.deque[tuple[str, Any]] = collections.deque()
        self._wake_queued = False  # a _WAKE is in the queue that will see _deferred
        self._wal = WalCheckpointer(conn, path)
        self._gate = threading.Lock()  # orders submit() against close()
        self._closing = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"aperion-store-writer:{path}", daemon=True
        )
        # stats, written by the writer thread only
        self.transactions = 0
        self.failed_transactions = 0
        self.ops = 0
        self.units: dict[str, int] = {}  # committed op weight per kind
        self.largest_batch = 0
        self.loop_callbacks = 0
        self.one_statement_commits = 0  # transactions committed by _commit_one
        self.pipelined_commits = 0  # ... of which started before the previous one's waiters woke
        self.splits = 0  # times the work in hand was cut in two halves (see _split_pipeline)

    # -- caller side ---------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, op: Op) -> None:
        """Queue ``op``; raises StoreClosedError once close() has begun."""
        with self._gate:
            if self._closing:
                raise self._closed_error()
            self._queue.put(op)

    def defer(self, kind: str, args: Any) -> None:
        """Run ``kind`` with ``args`` in the next transaction; nobody waits for it.

        Raises StoreClosedError once close() has begun. A failure is logged.

        Lock-free (it runs once per durable delivery): ``deque.append`` is atomic, and
        the writer clears ``_wake_queued`` before it drains the deque, so an item
        appended before this call reads the flag is either drained by that writer
        pass or announced by a new wake-up. A call racing with ``close()`` may miss
        the final transaction; for an ack that means one redelivery (at-least-once).
        """
        if self._closing:
            raise self._closed_error()
        self._deferred.append((kind, args))
        if not self._wake_queued:
            self._wake_queued = True
            self._queue.put(_WAKE)

    def close(self, timeout: float | None = None) -> None:
        """Commit everything queued so far, then stop the thread and close the connection."""
        with self._gate:
            if self._closing:
                return
            self._closing = True
            self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._wal.close()
            self._conn.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def thread_ident(self) -> int | None:
        return self._thread.ident

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def checkpoints(self) -> int:
        return self._wal.checkpoints

    def wal_pages(self) -> int:
        """WAL pages appended since the writer's last checkpoint."""
        return self._wal.pages_since_checkpoint()

    def _closed_error(self) -> StoreError:
        if self._failure is not None:
            err = StoreError(
                f"the event store {self._path} stopped after an internal error: {self._failure!r}",
                self._path,
            )
            err.__cause__ = self._failure
            return err
        return StoreClosedError(f"the event store {self._path} is closed", self._path)

    # -- writer thread ---------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug: fail loudly, never leave waiters hanging
            logger.exception("event store writer thread crashed")
            self._failure = exc
            with self._gate:
                self._closing = True
        finally:
            self._fail_leftovers()

    def _loop(self) -> None:
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        wal = self._wal
        max_batch = self._max_batch
        interval = self._timer_interval if self._timer is not None else None
        next_tick = time.monotonic() + interval if interval is not None else None
        while True:
            op: Op | None
            batch, self._carry = self._carry, []
            weight = sum(queued.weight for queued in batch)
            if batch or self._unsettled is not None:
                # Work in hand, or a one-statement commit whose waiters are not woken
                # yet: wake them now unless more work is queued (then after preparing
                # it, see below).
                try:
                    op = get_nowait()
                except queue.Empty:
                    if not batch:
                        self._release_unsettled()
                        continue
                    op = None
            else:
                dirty = wal.dirty  # WAL pages not yet checkpointed: wake up when idle
                if next_tick is None and not dirty:
                    timeout: float | None = None
                else:
                    timeout = (
                        max(0.0, self._last_active + IDLE_SECONDS - time.monotonic())
                        if dirty
                        else None
                    )
                    if next_tick is not None:
                        until_tick = max(0.0, next_tick - time.monotonic())
                        timeout = until_tick if timeout is None else min(timeout, until_tick)
                try:
                    op = get() if timeout is None else get(timeout=timeout)
                except queue.Empty:
                    op = None
            stop = op is _STOP
            if op is not None and not stop:
                if op is not _WAKE:
                    batch.append(op)
                    weight += op.weight
                while weight < max_batch:
                    try:
                        op = get_nowait()
                    except queue.Empty:
                        break
                    if op is _STOP:
                        stop = True
                        break
                    if op is not _WAKE:
                        batch.append(op)
                        weight += op.weight
            deferred = self._take_deferred()
            if not stop and self._unsettled is None and self._split_pipeline(batch, deferred):
                weight, self._carry = self._split(batch)
                self.splits += 1
            if batch or deferred:
                one = self._one_statement
                prepared = one.prepare(batch, deferred) if one is not None and not stop else None
                self._one_statement_took_last = prepared is not None
                # The previous commit's waiters wake as this commit's SQL starts: the
                # loop runs their tasks while SQLite works without the GIL.
                if prepared is not None and self._unsettled is not None:
                    self.pipelined_commits += 1
                self._release_unsettled()
                if prepared is not None:
                    assert one is not None
                    self._commit_one(one, batch, deferred, prepared, weight)
                else:
                    self._commit(batch, deferred, final=stop)
                    self._after_commit(weight + len(deferred))
            else:
                self._release_unsettled()
                if wal.dirty and time.monotonic() - self._last_active >= IDLE_SECONDS:
                    self._checkpoint_idle()
            if stop:
                self._release_unsettled()
                return
            if next_tick is not None and interval is not None and time.monotonic() >= next_tick:
                self._release_unsettled()
                next_tick = time.monotonic() + interval
                assert self._timer is not None
                try:
                    self._timer()
                except Exception:
                    logger.exception("event store periodic task failed")

    def _split_pipeline(self, batch: list[Op], deferred: list[tuple[str, Any]]) -> bool:
        """Commit only the first half of ``batch`` now? When nothing waits to be woken
        and the work (``deferred`` acks included) is the bus's batches for one
        statement: the halves then take turns, one committing while the loop wakes
        the other's publishers (see ``pipeline``)."""
        one = self._one_statement
        return (
            self.pipeline
            and self._one_statement_took_last  # else the halves would gain nothing
            and one is not None
            and len(batch) > 1
            and one.fits(batch, deferred)
        )

    @staticmethod
    def _split(batch: list[Op]) -> tuple[int, list[Op]]:
        """Cut ``batch`` in place after half its weight; returns (weight kept, rest)."""
        half = (sum(op.weight for op in batch) + 1) // 2
        kept = 0
        for index, op in enumerate(batch):
            kept += op.weight
            if kept >= half:
                rest = batch[index + 1 :]
                del batch[index + 1 :]
                return kept, rest
        return kept, []

    def _after_commit(self, units: int) -> None:
        """Checkpoint after a commit's waiters were woken, never inside a commit."""
        try:
            self._wal.after_commit(units, self._queue.empty())
        except Exception:
            logger.exception("event store checkpoint failed")
        self._last_active = time.monotonic()

    def _checkpoint_idle(self) -> None:
        try:
            self._wal.idle()
        except Exception:
            logger.exception("event store checkpoint failed")

    def _release_unsettled(self) -> None:
        """Wake the waiters of the last one-statement commit, if not done yet."""
        unsettled = self._unsettled
        if unsettled is not None:
            self._unsettled = None
            batch, results, units = unsettled
            self._settle(batch, results, final=False)
            self._after_commit(units)

    def _commit_one(
        self,
        one: OneStatementCommit,
        batch: list[Op],
        deferred: list[tuple[str, Any]],
        prepared: Prepared,
        units: int,
    ) -> None:
        """Commit ``batch`` and ``deferred`` as one statement (``_one_statement``); its
        waiters are woken later, by ``_release_unsettled``. A failure settles them now."""
        try:
            one.run(prepared)
        except Exception as exc:  # autocommit: the statement rolled itself back
            error = self._failed(exc, deferred)
            self._settle(batch, [error] * len(batch), final=False)
            self._after_commit(0)
            return
        if self._on_outcome is not None:
            self._on_outcome(True)
        self._count_committed(batch, deferred)
        self.one_statement_commits += 1
        self._unsettled = (batch, [None] * len(batch), units + len(deferred))

    def _count_committed(self, batch: list[Op], deferred: list[tuple[str, Any]]) -> None:
        self.transactions += 1
        self.ops += len(batch) + len(deferred)
        units = self.units
        for op in batch:
            units[op.kind] = units.get(op.kind, 0) + op.weight
        for kind, _ in deferred:
            units[kind] = units.get(kind, 0) + 1
        self.largest_batch = max(self.largest_batch, len(batch))

    def _take_deferred(self) -> list[tuple[str, Any]]:
        """Everything ``defer``-ed so far, for the transaction about to start."""
        self._wake_queued = False  # first: a defer() from now on queues a new wake-up
        deferred = self._deferred
        popleft = deferred.popleft
        return [popleft() for _ in range(len(deferred))]

    def _run_deferred(self, conn: sqlite3.Connection, deferred: list[tuple[str, Any]]) -> None:
        """One handler call per kind. Deferred kinds commute (acks and attempt counts:
        the final state does not depend on their relative order), so grouping is safe."""
        runs: dict[str, list[Any]] = {}
        for kind, args in deferred:
            run = runs.get(kind)
            if run is None:
                run = runs[kind] = []
            run.append(args)
        for kind, run in runs.items():
            for result in self._handlers[kind](conn, run):
                if isinstance(result, BaseException):
                    logger.error("event store %s failed: %s", kind, result)

    def _commit(
        self, batch: list[Op], deferred: list[tuple[str, Any]], *, final: bool = False
    ) -> None:
        conn = self._conn
        handlers = self._handlers
        n = len(batch)
        results: list[Any] = [None] * n
        try:
            conn.execute("BEGIN IMMEDIATE")
            if deferred:
                self._run_deferred(conn, deferred)
            i = 0
            while i < n:
                kind = batch[i].kind
                j = i + 1
                while j < n and batch[j].kind == kind:
                    j += 1
                out = handlers[kind](conn, [op.args for op in batch[i:j]])
                if len(out) != j - i:
                    raise RuntimeError(f"store handler {kind!r} returned {len(out)} results")
                results[i:j] = out
                i = j
            conn.execute("COMMIT")
            if self._on_outcome is not None:
                self._on_outcome(True)
            self._count_committed(batch, deferred)
        except Exception as exc:
            results = [self._failed(exc, deferred)] * n
        self._settle(batch, results, final=final)

    def _failed(self, exc: Exception, deferred: list[tuple[str, Any]]) -> StoreError:
        """A transaction failed: roll back what is left of it, count it, log the
        deferred ops it carried (lost: their deliveries stay pending) and return the
        error every op of it fails with."""
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("rollback failed on the event store")
        if self._on_outcome is not None:
            self._on_outcome(False)
        self.failed_transactions += 1
        error = translate_error(exc, self._path, "commit to the event store")
        if deferred:
            logger.error("event store: %d deferred ops not committed: %s", len(deferred), error)
        return error

    def _settle(self, batch: Sequence[Op], results: Sequence[Any], *, final: bool) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[LoopWaiter, Any, int]]] = {}
        for op, result in zip(batch, results, strict=True):
            if result is RESUBMIT:
                if not final:
                    self._queue.put(op)
                    continue
                result = getattr(op.args, "partial_result", None)
            if op.future is not None and op.loop is not None:
                items = by_loop.get(op.loop)
                if items is None:
                    items = by_loop[op.loop] = []
                items.append((op.future, result, op.weight))
            elif op.sync is not None:
                op.sync.settle(result)
            elif isinstance(result, BaseException):
                logger.error("event store %s failed: %s", op.kind, result)
        for loop, items in by_loop.items():
            self.loop_callbacks += 1
            try:
                loop.call_soon_threadsafe(_settle_futures, items)
            except RuntimeError:  # that loop is closed; nobody is waiting any more
                pass

    def _fail_leftovers(self) -> None:
        self._release_unsettled()  # committed: its waiters succeed
        error = self._closed_error()
        leftovers: list[Op] = self._carry  # taken from the queue, never committed
        self._carry = []
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if op is not _STOP and op is not _WAKE:
                leftovers.append(op)
        lost = self._take_deferred()
        if lost:
            logger.error("event store: %d deferred ops not committed: %s", len(lost), error)
        if leftovers:
            self._settle(leftovers, [error] * len(leftovers), final=True)
