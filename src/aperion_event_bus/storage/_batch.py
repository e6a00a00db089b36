"""Loop-side group commit: the appends one event loop makes in one loop iteration
travel to the writer as ONE op, and their publishers all await ONE future.

Per event that saves a future, an ``Op``, a queue put and a ``set_result``; per
batch the writer settles a single future, whose completion wakes every waiting
publisher. ``SQLiteStore.join_commit`` adds an append to the loop's open batch
(starting one, and scheduling its hand-over with ``loop.call_soon``, when there is
none): the batch is queued for the writer at the start of the next loop iteration,
after every task made ready in this one has had its turn, or at once when it holds
``BATCH_LIMIT`` events. While the writer commits one batch the loop keeps filling
the next.

Waiting (what ``EventBus.publish`` does for every durable publish): await
``batch.future``; on ``CancelledError`` await ``batch.rejoin(exc)`` instead; then
``batch.raise_failed(result, index)`` when the result is not ``None``.

The future is shared, so cancelling one awaiting task cancels it for every waiter.
``rejoin`` tells the two apart: the cancelled task gets its ``CancelledError``; any
other waiter waits again, on a fresh future the batch is settled through. The
batch's result is ``None`` when every append was committed, or a dict mapping the
index of each append that failed on its own (a payload that cannot be encoded) to
its exception; a failed transaction fails the whole batch (``set_exception``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from ..events import Event
from ._append import append
from ._writer import SETTLE_CHUNK

__all__ = ["BATCH_LIMIT", "CommitBatch"]

#: Most appends per batch. Small enough that the writer can cut the work in hand into
#: two halves of about equal size (with ``synchronous="NORMAL"`` the halves take
#: turns: one commits while the loop wakes the other's publishers), large enough
#: that a batch's op and future cost little per event. Measured with
#: ``benchmarks/durable.py`` (150 publishers): 32 gave 56-62k events/s against
#: 51-54k with 128, and no loss with ``FULL`` (docs/benchmarks.md).
BATCH_LIMIT: Final = SETTLE_CHUNK  # 32: one batch is woken per loop callback

_PENDING: Final = object()


class CommitBatch:
    """The appends of one loop iteration: one writer op, one future (see the module doc)."""

    __slots__ = ("entries", "future", "loop", "outcome", "queued")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        #: ``((event,), durable_names)`` per append, the shape the append handler takes
        self.entries: list[tuple[tuple[Event, ...], tuple[str, ...]]] = []
        self.outcome: Any = _PENDING  # the result or exception, once settled
        self.queued = False  # handed to the writer: no more appends join it

    # The writer settles a batch on its loop the way it settles a plain future.

    def done(self) -> bool:
        return self.outcome is not _PENDING

    def set_result(self, result: Any) -> None:
        self.outcome = result
        if not self.future.done():
            self.future.set_result(result)

    def set_exception(self, exc: BaseException) -> None:
        self.outcome = exc
        if not self.future.done():
            self.future.set_exception(exc)

    async def rejoin(self, cancelled: asyncio.CancelledError) -> Any:
        """After ``await self.future`` raised ``cancelled``: re-raise it if this task is
        being cancelled, else (another waiter cancelled the shared future) wait for the
        commit again and return its result."""
        while True:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise cancelled
            outcome = self.outcome
            if outcome is not _PENDING:
                if isinstance(outcome, BaseException):
                    raise outcome
                return outcome
            if self.future.done():  # cancelled: settle the batch through a fresh one
                self.future = self.loop.create_future()
            try:
                return await self.future
            except asyncio.CancelledError as exc:
                cancelled = exc

    async def committed(self, index: int) -> None:
        """Wait for the commit of append ``index`` of this batch; raises what failed
        it. (The bus inlines these lines: one coroutine less per publish.)"""
        try:
            failed = await self.future
        except asyncio.CancelledError as exc:
            failed = await self.rejoin(exc)
        if failed is not None:
            self.raise_failed(failed, index)

    @staticmethod
    def raise_failed(failed: dict[int, BaseException], index: int) -> None:
        """Raise the exception of append ``index`` if it failed on its own."""
        error = failed.get(index)
        if error is not None:
            raise error


def append_batches(conn: Any, runs: list[Any], seqs: Any = None) -> list[Any]:
    """Writer handler: the appends of a run of batches, in one append call."""
    entries = [entry for batch in runs for entry in batch.entries]
    results = append(conn, entries, seqs)
    if results.count(None) == len(results):
        return [None] * len(runs)
    out: list[Any] = []
    start = 0
    for batch in runs:
        end = start + len(batch.entries)
        failed = {i - start: results[i] for i in range(start, end) if results[i] is not None}
        out.append(failed or None)
        start = end
    return out
