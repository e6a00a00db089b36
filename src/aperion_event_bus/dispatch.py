"""The dispatch engine: admission (backpressure), per-subscription lanes, handler runs.

Every accepted event becomes a ``_Chain``: the event, the matching subscriptions
in priority order and the publisher's context. Each subscription owns a ``_Lane``
(a FIFO mailbox plus worker task(s) on the bus loop), so a subscription sees
events in publish order while unrelated subscriptions proceed independently.
Unless the bus runs handlers in parallel, a chain visits its subscriptions one
after another: a lower-priority handler starts only after the higher-priority
one finished the same event.

Async handlers run on the bus loop, stepped inside a copy of the publisher's
context (see ``_driver``). Sync handlers run in the thread pool, in batches per
lane so a burst costs one thread hand-off, not one per event. When every lane
of an event is idle, ``await bus.publish`` runs the handlers directly in the
publisher's task (no queue, no task switch). The engine does no I/O: failures
and observations go to the callbacks the bus installs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import functools
import inspect
import itertools
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from contextvars import Context
from types import CoroutineType
from typing import Any, Protocol

from ._accel import speedups
from ._driver import drive
from ._wiring import count_of, library_logger
from .context import _correlation_id, _current_event
from .errors import BackpressureError, BusClosedError, HandlerTimeoutError
from .events import Event
from .results import HandlerResult, _handler_result
from .subscriptions import Subscription

__all__ = ["Dispatcher", "OverflowPolicy"]

logger = library_logger("aperion_event_bus.dispatch")
_perf = time.perf_counter
_running_loop = asyncio._get_running_loop

QUEUED, STARTED, DROPPED, DONE, ABANDONED = 0, 1, 2, 3, 4  # chain states
_MAX_BATCH = 256
_BURST = 256  # quick deliveries per lane before the worker yields to the loop


class OverflowPolicy(enum.StrEnum):
    """What to do with a new event when ``max_pending_events`` are unfinished."""

    DROP = "drop"
    DROP_OLDEST = "drop_oldest"
    RAISE = "raise"
    BLOCK = "block"

    @classmethod
    def parse(cls, value: OverflowPolicy | str) -> OverflowPolicy:
        if isinstance(value, OverflowPolicy):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            choices = ", ".join(repr(p.value) for p in cls)
            raise ValueError(
                f"unknown overflow_policy {value!r}; use OverflowPolicy or one of {choices}"
            ) from None


class FailureSink(Protocol):
    """Receives every final handler failure (after retries)."""

    def __call__(
        self,
        sub: Subscription,
        event: Event,
        error: BaseException,
        timed_out: bool,
        attempts: int,
        duration: float,
    ) -> None: ...


class HandlerObserver(Protocol):
    """Optional per-call observation (metrics)."""

    def handler_finished(
        self,
        sub: Subscription,
        event: Event,
        duration: float,
        error: BaseException | None,
        timed_out: bool,
        attempts: int,
    ) -> None: ...

    def handler_retry(self, sub: Subscription, event: Event, attempt: int) -> None: ...


# tracing: the span scope of one handler call, None when there is nothing to do
SpanFactory = Callable[[Event, str], AbstractContextManager[Any] | None]
Outcome = tuple[Any, BaseException | None, bool, float, int]  # value, error, timed_out, secs, attempts
_QUIET_OK: Outcome = (None, None, False, 0.0, 1)  # a success whose details nobody reads


class _Chain:
    """One accepted event travelling through its subscriptions."""

    __slots__ = ("ctx", "event", "idx", "notify", "remaining", "results", "state", "subs")

    def __init__(
        self,
        event: Event,
        subs: tuple[Subscription, ...],
        ctx: Context,
        notify: Callable[[_Chain], None] | None,
        results: list[HandlerResult] | None,
    ) -> None:
        self.event = event
        self.subs = subs
        self.ctx = ctx
        self.idx = 0
        self.remaining = len(subs)
        self.notify = notify
        self.results = results
        self.state = QUEUED


class _Suspended:
    """A quick-path delivery whose handler suspended on its first step."""

    __slots__ = ("chain", "coro", "ctx", "start", "yielded")

    def __init__(self, chain: _Chain, ctx: Context, coro: Any, yielded: Any, start: float) -> None:
        self.chain = chain
        self.ctx = ctx
        self.coro = coro
        self.yielded = yielded
        self.start = start


_BURST_DONE = object()  # _run_quick ran _BURST deliveries: give the loop a turn
_NO_LOOP = object()  # quick_loop when the hot path does not apply (never a running loop)


_Entry = _Chain | Event | Context  # what a lane's mailbox holds (see _Lane)
_NewEvent = tuple[Event, tuple[Subscription, ...], Context]  # fire-and-forget, via the ingress
_Batched = _Chain | Event  # an item of a sync lane's batch (a bare event or a chain)


class _Lane:
    """A subscription's mailbox and the worker task(s) that drain it.

    The mailbox holds ``_Chain`` records and, for plain fire-and-forget events of
    an unbounded bus published on the loop, the bare ``Event`` (no record per
    event: a burst keeps one object less per queued event alive). A bare event
    runs in the context of the entry before it; when the publisher's context
    changes, the new ``Context`` goes into the mailbox first as a marker.
    ``tail_ctx`` is the context of the newest entry, ``head_ctx`` that of the
    entry taken last; ``markers`` counts the Context entries (not events)."""

    __slots__ = (
        "closing",
        "dead",
        "head_ctx",
        "mailbox",
        "markers",
        "running",
        "sub",
        "successor",
        "tail_ctx",
        "waiter",
        "workers",
    )

    def __init__(self, sub: Subscription, old: _Lane | None = None) -> None:
        self.sub = sub
        self.dead = False  # every worker ended unexpectedly (cancelled from outside)
        self.running = 0
        self.waiter: asyncio.Future[None] | None = None
        self.workers: list[asyncio.Task[None]] = []
        self.closing = False
        self.mailbox: deque[_Entry] = deque()
        self.head_ctx: Context | None = None
        self.tail_ctx: Context | None = None
        self.markers = 0
        self.successor: _Lane | None = None  # the lane that took over when this one died
        if old is not None:  # take over what a dead lane left queued
            self.mailbox = old.mailbox
            # deliveries still running on the dead lane (direct ones, in a publisher's
            # task) keep counting; they release the successor (see Dispatcher._release_lane)
            self.running = old.running
            self.head_ctx, self.tail_ctx, self.markers = old.head_ctx, old.tail_ctx, old.markers
            old.successor = self

    def append(self, chain: _Chain) -> None:
        """Queue a chain record (its own context becomes the tail context)."""
        self.mailbox.append(chain)
        self.tail_ctx = chain.ctx

    def normalise_head(self) -> _Chain | None:
        """Drop leading context markers and turn a bare event at the head into a
        chain record in place; returns the head chain (None when empty)."""
        mailbox = self.mailbox
        while mailbox:
            head = mailbox[0]
            if type(head) is _Chain:
                return head
            if type(head) is Event:
                assert self.head_ctx is not None
                chain = _Chain(head, (self.sub,), self.head_ctx, None, None)
                mailbox[0] = chain
                return chain
            self.pop_marker()
        return None

    def pop_marker(self) -> None:
        """Drop the Context marker at the head: it is the context of the bare events
        that follow it."""
        marker = self.mailbox.popleft()
        assert type(marker) is Context
        self.head_ctx = marker
        self.markers -= 1

    def wake(self) -> None:
        fut = self.waiter
        if fut is not None:
            self.waiter = None
            if not fut.done():
                fut.set_result(None)


class _BatchProgress:
    """Shared between a lane worker and the pool thread running a sync batch."""

    __slots__ = ("abandoned", "index", "outcomes", "started")

    def __init__(self) -> None:
        self.index = 0
        self.started: float | None = None  # None until a pool thread picks the batch up
        self.abandoned = False
        self.outcomes: list[Outcome] = []


class _Waiter:
    """A publisher waiting for a slot under the BLOCK policy (thread or coroutine)."""

    __slots__ = ("error", "event", "future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.granted = False
        self.error: BaseException | None = None  # set when the bus closes instead
        self.loop = loop
        self.future: asyncio.Future[None] | None = loop.create_future() if loop else None
        self.event: threading.Event | None = None if loop else threading.Event()

    def grant(self, on_loop: asyncio.AbstractEventLoop | None) -> None:
        """Wake the waiter (``granted`` is already set under the dispatcher lock)."""
        if self.event is not None:
            self.event.set()
        elif self.loop is on_loop and self.loop is not None:
            _resolve(self.future)
        elif self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(_resolve, self.future)
            except RuntimeError:  # the waiter's loop is gone
                pass


def _resolve(fut: asyncio.Future[Any] | None, value: Any = None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(value)


def _enter(handler: Callable[[Any], Any], arg: Any, event: Event) -> Any:
    """Runs inside the handler's context copy: make ``event`` the current event, call."""
    _current_event.set(event)
    if event.correlation_id is not None:
        _correlation_id.set(event.correlation_id)
    return handler(arg)


async def _await_any(awaitable: Any) -> Any:
    return await awaitable


def _enter_async(handler: Callable[[Any], Any], arg: Any, event: Event) -> Any:
    """``_enter`` for async handlers: always returns a coroutine to step (an awaitable
    of another kind, e.g. from an async ``__call__`` returning a future, is wrapped)."""
    coro = _enter(handler, arg, event)
    return coro if type(coro) is CoroutineType else _await_any(coro)


# _run_quick's loop over bare events, in C when the accelerator is in use
_quick_bare: Any = None
if speedups is not None:
    speedups.set_dispatch(_current_event, _correlation_id, _await_any, _perf, _Lane, Subscription)
    _quick_bare = speedups.quick_bare


def _traced_call(
    span: SpanFactory, name: str, handler: Callable[[Any], Any], arg: Any, event: Event
) -> Any:
    scope = span(event, name)
    if scope is None:
        return _enter(handler, arg, event)
    with scope:
        return _enter(handler, arg, event)


class Dispatcher:
    """Admission control, lanes and handler execution for one bus."""

    def __init__(
        self,
        *,
        executor: Executor,
        max_pending: int | None,
        policy: OverflowPolicy,
        default_timeout: float | None,
        parallel: bool,
        on_failure: FailureSink,
        on_drop: Callable[[Event, str], None] | None = None,
    ) -> None:
        if max_pending is not None and max_pending < 1:
            raise ValueError("max_pending_events must be a positive integer or None")
        self.executor = executor
        self.max_pending = max_pending
        self.policy = policy
        self.default_timeout = default_timeout
        self.parallel = parallel
        self.on_failure = on_failure
        self.on_drop = on_drop
        self.observer: HandlerObserver | None = None
        self.span: SpanFactory | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.quick_loop: object = _NO_LOOP
        self._lock = threading.Lock()
        self._bounded = max_pending is not None
        self._pending = 0  # bounded mode: exact count under the lock
        self._acc = itertools.count()  # admissions (lock-free when unbounded)
        self._fin = itertools.count()  # releases
        self._blocked: deque[_Waiter] = deque()
        self._queued: deque[_Chain] | None = (
            deque() if policy is OverflowPolicy.DROP_OLDEST and max_pending is not None else None
        )
        self._idle_waiters: list[Callable[[], None]] = []
        self._ingress: deque[_Chain | _NewEvent] = deque()
        self._ingress_scheduled = False
        self._lanes: set[_Lane] = set()
        #: bumped by reset_pending: a coroutine started under an older generation
        #: belongs to a dead loop whose events were counted as lost
        self.generation = 0
        self.stopping = False
        self.need_loop: Callable[[], Any] | None = None  # binds a loop on demand (bus)
        self.on_cancelled: Callable[[Subscription, Event], None] | None = None

    # ------------------------------------------------------------------ binding
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to ``loop``; lanes and their workers live there."""
        self.loop = loop
        # publish_nowait's lock-free hot path applies on this loop when unbounded
        self.quick_loop = loop if not self._bounded else _NO_LOOP
        self._lanes.clear()
        self._ingress_scheduled = False

    def on_loop_thread(self) -> bool:
        """True when called from code running on the bus loop (in its thread)."""
        loop = self.loop
        return loop is not None and _running_loop() is loop

    # ---------------------------------------------------------------- admission
    @property
    def pending(self) -> int:
        """Accepted events whose handlers have not all finished."""
        if self._bounded:
            return self._pending
        return count_of(self._acc) - count_of(self._fin)

    @property
    def accepted(self) -> int:
        return count_of(self._acc)

    @property
    def finished(self) -> int:
        """Accepted events whose handlers have all finished (since the loop started)."""
        return count_of(self._fin)

    def reset_pending(self) -> int:
        """Forget unfinished events (their loop died); returns how many there were.

        Their deliveries may still sit in suspended coroutines of the dead loop. When
        the garbage collector closes those (GeneratorExit), they must not finish
        their events: the slots were already counted as lost here, so the lane and
        direct paths started before this reset (an older ``generation``) re-raise
        GeneratorExit without releasing anything. A coroutine of the live loop closed
        that way (a task dropped while it waited) still finishes its event."""
        with self._lock:
            self.generation += 1
            lost = self.pending
            self._pending = 0
            self._fin = itertools.count(count_of(self._acc))
            waiters, self._blocked = list(self._blocked), deque()
            for waiter in waiters:
                waiter.granted = True
            if self._queued is not None:
                for chain in self._queued:
                    chain.state = DROPPED
                self._queued.clear()
            self._ingress.clear()
            self._idle_waiters = []
            self.stopping = False
        for waiter in waiters:
            waiter.grant(None)
        return lost

    def submit_unbounded(self, event: Event, subs: tuple[Subscription, ...], ctx: Context) -> None:
        """Admit a fire-and-forget event (a counter step: no ``max_pending_events``)
        and hand it to its lanes, from any thread. From another thread it travels
        through the ingress as an ``(event, subs, ctx)`` tuple, not a chain record."""
        if _running_loop() is self.quick_loop:  # on the loop thread (never true for None)
            self.dispatch_new(event, subs, ctx)
            return
        next(self._acc)
        self._ingress.append((event, subs, ctx))
        if not self._ingress_scheduled:
            self._schedule_ingress()

    def try_admit(self, chain: _Chain) -> bool | None:
        """Count ``chain`` as pending. True: admitted. False: dropped (DROP).
        None: must wait for a slot (BLOCK). Raises BackpressureError (RAISE)."""
        if not self._bounded:
            next(self._acc)
            return True
        victim: _Chain | None = None
        with self._lock:
            limit = self.max_pending
            assert limit is not None
            if self._pending < limit:
                self._pending += 1
                next(self._acc)
                queued = self._queued
                if queued is not None:
                    while queued and queued[0].state != QUEUED:  # started or done: forget
                        queued.popleft()
                    queued.append(chain)
                return True
            policy = self.policy
            if policy is OverflowPolicy.BLOCK:
                return None
            if policy is OverflowPolicy.RAISE:
                raise BackpressureError(
                    f"{self._pending} events are pending (max_pending_events={limit}); "
                    f"{chain.event.event_type} was refused. Slow down, raise the limit, or use "
                    "overflow_policy='block' with `await bus.publish(...)`.",
                    self._pending,
                    limit,
                )
            if policy is OverflowPolicy.DROP_OLDEST:
                victim = self._pop_oldest_queued()
                if victim is not None:
                    self._queued.append(chain)  # type: ignore[union-attr]
                    next(self._acc)
                    next(self._fin)  # the victim's slot is now the new event's
        if victim is None:
            chain.state = DROPPED
            self._dropped(chain.event, "max_pending_events reached (newest dropped)")
            return False
        self._dropped(victim.event, "max_pending_events reached (oldest queued dropped)")
        self._notify_dropped(victim)
        return True

    def _pop_oldest_queued(self) -> _Chain | None:
        queued = self._queued
        assert queued is not None
        while queued:
            oldest = queued.popleft()
            if oldest.state == QUEUED:
                oldest.state = DROPPED
                return oldest
        return None

    def _dropped(self, event: Event, reason: str) -> None:
        if self.on_drop is not None:
            self.on_drop(event, reason)

    def _notify_dropped(self, chain: _Chain) -> None:
        notify = chain.notify
        if notify is not None:
            if self.loop is not None and not self.on_loop_thread():
                self.loop.call_soon_threadsafe(notify, chain)
            else:
                notify(chain)

    def admit_forced(self) -> None:
        """Count an event that bypasses backpressure (system events, waited emits)."""
        if self._bounded:
            with self._lock:
                self._pending += 1
        next(self._acc)

    def _take_slot_or_queue(self, waiter: _Waiter) -> bool:
        """Take a free slot (True) or queue ``waiter`` for the next one (False)."""
        with self._lock:
            assert self.max_pending is not None
            if self._pending < self.max_pending:
                self._pending += 1
                next(self._acc)
                return True
            self._blocked.append(waiter)
            return False

    def admit_blocking(self, chain: _Chain) -> None:
        """BLOCK policy from a plain thread: wait until a slot is handed over."""
        waiter = _Waiter(None)
        if not self._take_slot_or_queue(waiter):
            assert waiter.event is not None
            waiter.event.wait()
            if waiter.error is not None:
                raise waiter.error

    async def admit_async(self, chain: _Chain) -> None:
        """BLOCK policy from a coroutine: await a slot without blocking any loop."""
        waiter = _Waiter(asyncio.get_running_loop())
        if self._take_slot_or_queue(waiter):
            return
        assert waiter.future is not None
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                if not waiter.granted:
                    self._blocked.remove(waiter)
                    raise
            if waiter.error is None:
                self.release()  # the slot arrived as we were cancelled: give it back
            raise
        if waiter.error is not None:
            raise waiter.error

    def release(self) -> None:
        """A pending event finished: hand its slot to a blocked publisher or free it."""
        next(self._fin)
        if not self._bounded:
            if self._idle_waiters:
                self._wake_idle()
            return
        handoff: _Waiter | None = None
        with self._lock:
            if self._blocked and not self.stopping:
                handoff = self._blocked.popleft()
                handoff.granted = True
                next(self._acc)  # the slot passes straight to the waiting publisher
            else:
                self._pending -= 1
        if handoff is not None:
            handoff.grant(self.loop)
        elif self._idle_waiters:
            self._wake_idle()

    def _wake_idle(self) -> None:
        if not self._bounded and count_of(self._acc) != count_of(self._fin):
            return  # cheap pre-check; confirmed under the lock below
        with self._lock:
            if self.pending != 0:
                return
            waiters, self._idle_waiters = self._idle_waiters, []
        for wake in waiters:
            wake()

    # ----------------------------------------------------------------- enqueue
    def enqueue(self, chain: _Chain) -> None:
        """Hand an admitted chain to its lanes (from any thread)."""
        if self.on_loop_thread():
            self._dispatch(chain)
            return
        self._ingress.append(chain)
        self._schedule_ingress()

    def _schedule_ingress(self) -> None:
        if not self._ingress_scheduled:
            self._ingress_scheduled = True
            loop = self.loop
            assert loop is not None
            loop.call_soon_threadsafe(self._drain_ingress)

    def _drain_ingress(self) -> None:
        self._ingress_scheduled = False
        ingress = self._ingress
        dispatch = self._dispatch
        place = self._place_new
        while ingress:
            # the head stays visible to lanes_idle() until it sits in a mailbox
            entry = ingress[0]
            if isinstance(entry, tuple):
                place(*entry)
            else:
                dispatch(entry)
            ingress.popleft()

    def dispatch_new(self, event: Event, subs: tuple[Subscription, ...], ctx: Context) -> None:
        """Admit and dispatch a fire-and-forget event on the loop thread (unbounded
        bus only: admission is a counter step, no lock)."""
        next(self._acc)
        self._place_new(event, subs, ctx)

    def _place_new(self, event: Event, subs: tuple[Subscription, ...], ctx: Context) -> None:
        """Put an admitted fire-and-forget event into its lane's mailbox as a bare
        event when it has a single subscription with an open lane, else as a chain."""
        if len(subs) == 1:
            sub = subs[0]
            lane = sub._lane
            if lane is not None and sub._active and not (lane.closing or lane.dead):
                mailbox = lane.mailbox
                if lane.tail_ctx is not ctx:
                    mailbox.append(ctx)
                    lane.tail_ctx = ctx
                    lane.markers += 1
                mailbox.append(event)  # bare: see _Lane
                if lane.waiter is not None:
                    lane.wake()
                return
        self._dispatch(_Chain(event, subs, ctx, None, None))

    def _dispatch(self, chain: _Chain) -> None:
        if chain.state == DROPPED or chain.state == ABANDONED:
            return
        subs = chain.subs
        if len(subs) == 1:
            sub = subs[0]
            if not sub.active:
                self._finish(chain)
                return
            lane = sub._lane
            if lane is None or lane.closing or lane.dead:
                lane = self._open_lane(sub)
            lane.append(chain)
            if lane.waiter is not None:
                lane.wake()
            return
        if not all(s.active for s in subs):  # unsubscribed since matching: skip them
            subs = chain.subs = tuple(s for s in subs if s.active)
            chain.remaining = len(subs)
            if not subs:
                self._finish(chain)
                return
        for sub in subs:
            lane = sub._lane
            if lane is None or lane.closing or lane.dead:
                lane = self._open_lane(sub)
            lane.append(chain)
        if self.parallel:
            for sub in subs:
                sub._lane.wake()
        else:
            subs[0]._lane.wake()

    def _open_lane(self, sub: Subscription) -> _Lane:
        old = sub._lane
        lane = _Lane(sub, old if old is not None and old.dead and not old.closing else None)
        sub._lane = lane
        loop = self.loop
        assert loop is not None
        work = self._async_worker if sub.is_async else self._sync_worker
        for _ in range(sub.concurrency):
            # a fresh context: lanes must not carry the context of whoever opened them
            task = loop.create_task(
                work(lane), name=f"aperion-lane:{sub.handler_name}", context=Context()
            )
            task.add_done_callback(functools.partial(self._worker_ended, lane))
            lane.workers.append(task)
        self._lanes.add(lane)
        return lane

    def _worker_ended(self, lane: _Lane, task: asyncio.Task[None]) -> None:
        """A lane worker ended: normal when the lane closed; otherwise it was cancelled
        from outside (loop shutdown, or a handler cancelling its own task). Keep the
        mailbox and start a fresh lane unless the bus or the loop is going away."""
        if lane.closing or self.stopping:
            return
        if not task.cancelled() and task.exception() is not None:
            logger.error("lane worker for %s died", lane.sub.handler_name, exc_info=task.exception())
        if any(not t.done() for t in lane.workers):
            return
        lane.dead = True
        self._lanes.discard(lane)
        loop = self.loop
        if lane.mailbox and lane.sub.active and loop is not None and loop.is_running():
            self._open_lane(lane.sub)

    def close_lane(self, sub: Subscription) -> None:
        """Called after unsubscribe: the lane skips what is left and its workers end."""
        lane = sub._lane
        if lane is not None:
            lane.closing = True
            loop = self.loop
            if loop is not None and not loop.is_closed():
                if self.on_loop_thread():
                    lane.wake()
                else:
                    try:
                        loop.call_soon_threadsafe(lane.wake)
                    except RuntimeError:  # loop closed meanwhile
                        pass

    # ------------------------------------------------------------------- lanes
    def _take(self, lane: _Lane, held: int = 0) -> _Chain | None:
        """Pop the head chain if this lane may start it now (counted as running).

        ``held``: running counts the caller already holds for this lane (a batch
        being taken), which do not count against the lane's concurrency."""
        mailbox = lane.mailbox
        sub = lane.sub
        while True:
            chain = lane.normalise_head()
            if chain is None:
                return None
            if chain.state == DROPPED:
                mailbox.popleft()
                continue
            if lane.running - held >= sub.concurrency:
                return None
            if not self.parallel and chain.subs[chain.idx] is not sub:
                return None
            if chain.state == QUEUED and not self._start(chain):
                mailbox.popleft()
                continue
            lane.running += 1  # before popping: lanes_idle() in another thread sees it
            mailbox.popleft()
            lane.head_ctx = chain.ctx
            return chain

    def _start(self, chain: _Chain) -> bool:
        """Mark a chain started; False if DROP_OLDEST dropped it meanwhile."""
        if self._queued is None:
            chain.state = STARTED
            return True
        with self._lock:
            if chain.state == DROPPED:
                return False
            chain.state = STARTED
            return True

    async def _wait(self, lane: _Lane) -> None:
        if not lane.mailbox:  # idle: keep no publisher context alive
            lane.head_ctx = lane.tail_ctx = None
        fut = lane.waiter
        if fut is None:
            assert self.loop is not None
            fut = lane.waiter = self.loop.create_future()
        await fut

    def _lane_exit(self, lane: _Lane) -> bool:
        """True when a closing lane has nothing left: the worker may end."""
        if lane.closing and not lane.mailbox:
            self._lanes.discard(lane)
            return True
        return False

    def _contain(self, sub: Subscription, chain: _Chain, exc: BaseException) -> None:
        """A BaseException escaped a handler run inside a lane worker.

        Cancellation of the worker, KeyboardInterrupt and SystemExit propagate;
        anything else is recorded as that handler's failure and the lane goes on.
        """
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise exc
        if isinstance(exc, asyncio.CancelledError) and (self.stopping or _being_cancelled()):
            # The worker itself is cancelled (bus close, loop shutdown, or the handler
            # cancelled its own task): report the delivery, then let the worker end;
            # _worker_ended keeps the mailbox for a fresh worker.
            self._settle(sub, chain, (None, exc, False, 0.0, 1))
            raise exc
        self._settle(sub, chain, (None, exc, False, 0.0, 1))

    async def _async_worker(self, lane: _Lane) -> None:
        generation = self.generation
        sub = lane.sub
        take = self._take
        advance = self._advance
        while True:
            if lane.mailbox:
                step = self._run_quick(lane)
                if step is _BURST_DONE:
                    await asyncio.sleep(0)  # a long burst must not starve the loop
                    continue
                if isinstance(step, _Suspended):
                    await self._finish_quick(lane, step)
                    continue
            chain = take(lane)
            if chain is None:
                if self._lane_exit(lane):
                    return
                await self._wait(lane)
                continue
            handler = sub._strong or sub.handler
            try:
                if handler is not None and not lane.closing and sub.active:
                    if chain.results is None and sub.schema is None and not sub.retries:
                        await self._fast_async(sub, handler, chain)
                    else:
                        await self._deliver_async(sub, handler, chain)
            except BaseException as exc:
                if type(exc) is GeneratorExit and generation != self.generation:
                    raise  # closed after its loop died: see reset_pending
                lane.running -= 1
                advance(chain)
                self._contain(sub, chain, exc)
                continue
            finally:
                handler = None  # do not keep a weakly held subscriber alive while idle
            lane.running -= 1
            advance(chain)

    def _run_quick(self, lane: _Lane) -> _Suspended | object | None:
        """Run the lane's queued fire-and-forget deliveries in a plain loop.

        Covers the common case (fire and forget: no result list, no schema,
        retries or span; an event with several subscriptions when it is this
        lane's turn): each handler is stepped once in a copy of the event's
        context and almost always finishes there, so a burst costs no coroutine,
        call chain or idle check per event. Returns the delivery whose
        handler suspended (the worker awaits it), ``_BURST_DONE`` after
        ``_BURST`` deliveries (the worker yields to the loop), or None when the
        mailbox is empty or its head needs the general path."""
        sub = lane.sub
        if sub.schema is not None or sub.retries:
            return None
        handler = sub._strong or sub.handler
        if handler is None:
            return None
        mailbox = lane.mailbox
        observer = self.observer
        span = self.span  # a delivery that needs a span scope takes the general path
        name = sub.handler_name
        plain_release = not self._bounded
        drop_oldest = self._queued is not None
        parallel = self.parallel
        fin = self._fin
        quick_bare = _quick_bare if observer is None and span is None else None
        budget = _BURST
        try:
            while budget > 0:
                if not mailbox:
                    return None
                entry = mailbox[0]
                if quick_bare is not None and type(entry) is Event:
                    # the same steps for a run of bare events, in C
                    done, leftover = quick_bare(lane, sub, handler, fin, budget)
                    budget -= done
                    if leftover is not None:
                        event, base, ctx, coro, yielded, start, exc = leftover
                        if exc is None:
                            return _Suspended(
                                _started_chain(event, sub, base), ctx, coro, yielded, start
                            )
                        try:  # handled as in the Python loop: sys.exc_info() is set
                            raise exc  # for hooks, and the traceback starts here
                        except BaseException:
                            self._quick_failed(lane, sub, event, None, base, exc, start, fin)
                        continue
                    if budget <= 0 or not mailbox:
                        continue
                    entry = mailbox[0]  # not for the C loop: handled below
                budget -= 1
                chain: _Chain | None
                if type(entry) is Event:  # bare fire-and-forget event (see _Lane)
                    event, chain, base = entry, None, lane.head_ctx
                elif type(entry) is _Chain:
                    chain = entry
                    if chain.results is not None:
                        return None
                    if len(chain.subs) == 1:
                        if chain.state != QUEUED:
                            return None
                    elif (chain.state != QUEUED and chain.state != STARTED) or (
                        not parallel and chain.subs[chain.idx] is not sub  # not its turn yet
                    ):
                        return None
                    event, base = chain.event, chain.ctx
                else:
                    lane.pop_marker()
                    continue
                if (
                    lane.running >= sub.concurrency  # e.g. reserved by a direct publish
                    or lane.closing
                    or not sub._active
                    or (span is not None and span(event, name) is not None)
                ):
                    return None
                if chain is not None:
                    if chain.state == QUEUED:
                        if drop_oldest and not self._start(chain):
                            return None  # dropped meanwhile: _take discards it
                        chain.state = STARTED
                    lane.head_ctx = base
                assert base is not None
                lane.running += 1  # before popping: lanes_idle() in another thread sees it
                mailbox.popleft()
                ctx = base.copy()  # contexts are shared between events: run in a copy
                # _step inlined: on this per-event path the call and its outcome tuple
                # cost ~10% of a fire-and-forget event (callgrind)
                start = _perf()
                outcome: Outcome | None = None
                try:
                    coro = ctx.run(_enter_async, handler, event, event)
                    yielded = ctx.run(coro.send, None)
                except StopIteration:
                    if observer is not None:
                        outcome = (None, None, False, _perf() - start, 1)
                except BaseException as exc:
                    self._quick_failed(lane, sub, event, chain, base, exc, start, fin)
                    continue
                else:
                    chain = chain or _started_chain(event, sub, base)
                    return _Suspended(chain, ctx, coro, yielded, start)
                lane.running -= 1
                if chain is None:
                    next(fin)  # a bare event exists only on an unbounded bus
                elif plain_release and chain.notify is None and len(chain.subs) == 1:
                    chain.state = DONE
                    next(fin)
                else:
                    self._advance(chain)  # the next handler's turn, or finished
                if outcome is not None:  # reported after the lane's bookkeeping: a failing
                    self.settle(sub, event, None, outcome)  # observer cannot wedge the lane
            return _BURST_DONE
        finally:
            if self._idle_waiters:
                self._wake_idle()

    def _quick_failed(
        self,
        lane: _Lane,
        sub: Subscription,
        event: Event,
        chain: _Chain | None,
        base: Context,
        exc: BaseException,
        start: float,
        fin: Iterator[int],
    ) -> None:
        """A quick delivery whose handler raised (popped and counted as running): an
        Exception is the handler's failure, reported after the lane's bookkeeping (a
        failing observer cannot wedge the lane); anything else (KeyboardInterrupt,
        CancelledError, ...) is contained like a worker's."""
        if not isinstance(exc, Exception):
            lane.running -= 1
            chain = chain or _started_chain(event, sub, base)
            self._advance(chain)
            self._contain(sub, chain, exc)
            return
        outcome: Outcome = (None, exc, False, _perf() - start, 1)
        lane.running -= 1
        if chain is None:
            next(fin)  # a bare event exists only on an unbounded bus
        elif not self._bounded and chain.notify is None and len(chain.subs) == 1:
            chain.state = DONE
            next(fin)
        else:
            self._advance(chain)
        self.settle(sub, event, None, outcome)

    @staticmethod
    def _step(
        handler: Callable[[Any], Any], chain: _Chain, ctx: Context, start: float
    ) -> Outcome | _Suspended:
        """Step an async handler once in ``ctx`` (started at ``start``): its outcome
        when it finished or failed there, else the suspended delivery to finish with
        ``_finish_async``. A handler's own CancelledError is its failure; only
        KeyboardInterrupt, SystemExit and GeneratorExit propagate."""
        event = chain.event
        try:
            coro = ctx.run(_enter_async, handler, event, event)
            yielded = ctx.run(coro.send, None)
        except StopIteration as stop:
            return (stop.value, None, False, _perf() - start, 1)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:
            return (None, exc, False, _perf() - start, 1)
        return _Suspended(chain, ctx, coro, yielded, start)

    async def _finish_quick(self, lane: _Lane, step: _Suspended) -> None:
        """Await a delivery whose handler suspended in ``_run_quick``, then settle it."""
        generation = self.generation
        sub = lane.sub
        chain = step.chain
        try:
            outcome = await self._finish_async(
                sub, step.ctx, step.coro, step.yielded, chain.event, step.start
            )
            if outcome[1] is not None or self.observer is not None:
                self._settle(sub, chain, outcome)
        except BaseException as exc:
            if type(exc) is GeneratorExit and generation != self.generation:
                raise  # closed after its loop died: see reset_pending
            lane.running -= 1
            self._advance(chain)
            self._contain(sub, chain, exc)
            return
        lane.running -= 1
        self._advance(chain)

    async def _fast_async(
        self, sub: Subscription, handler: Callable[[Any], Any], chain: _Chain
    ) -> None:
        """Step the handler once in the event's context; most handlers finish without
        suspending, so no timer, frame or result object is needed. A tracing span is
        entered and left in the same context (no wrapper coroutine)."""
        event = chain.event
        ctx = chain.ctx.copy()  # chain contexts may be shared between events
        span = self.span(event, sub.handler_name) if self.span is not None else None
        if span is not None:
            ctx.run(span.__enter__)
        outcome: Outcome | None = None
        try:
            step = self._step(handler, chain, ctx, _perf())
            if type(step) is _Suspended:
                outcome = await self._finish_async(
                    sub, ctx, step.coro, step.yielded, event, step.start
                )
            else:
                outcome = step  # type: ignore[assignment]
        finally:
            if span is not None:
                error = outcome[1] if outcome is not None else sys.exc_info()[1]
                ctx.run(span.__exit__, type(error) if error else None, error, None)
        assert outcome is not None
        if outcome[1] is not None or self.observer is not None:
            self._settle(sub, chain, outcome)

    async def _finish_async(
        self,
        sub: Subscription,
        ctx: Context,
        coro: Any,
        yielded: Any,
        event: Event,
        start: float,
    ) -> Outcome:
        """The handler suspended: finish it under its timeout."""
        timeout = self.timeout_of(sub)
        try:
            if timeout is None:
                return (await drive(ctx, coro, yielded), None, False, _perf() - start, 1)
            value, timed_out = await self._drive_with_timeout(ctx, coro, yielded, start + timeout)
        except asyncio.CancelledError as exc:
            if _being_cancelled():
                raise
            return (None, exc, False, _perf() - start, 1)
        except Exception as exc:
            return (None, exc, False, _perf() - start, 1)
        if timed_out:
            return (None, self._timeout_error(sub, event, timeout), True, _perf() - start, 1)
        return (value, None, False, _perf() - start, 1)

    def _timeout_error(self, sub: Subscription, event: Event, timeout: float) -> HandlerTimeoutError:
        return HandlerTimeoutError(
            f"async handler {sub.handler_name} exceeded its {timeout}s timeout for "
            f"{event.event_type} {event.event_id} and was cancelled",
            sub.handler_name,
            event.event_id,
        )

    async def _sync_worker(self, lane: _Lane) -> None:
        generation = self.generation
        sub = lane.sub
        # Under DROP_OLDEST an event must stay droppable until its handler starts.
        max_batch = 1 if self._queued is not None else _MAX_BATCH
        while True:
            batch, ctxs = self._take_batch(lane, max_batch)
            if not batch:
                if self._lane_exit(lane):
                    return
                await self._wait(lane)
                continue
            handler = sub.handler  # the batch holds one running count (see _take_batch)
            if handler is None or lane.closing or not sub.active:
                handler = None
                lane.running -= 1
                self._advance_all(batch)
                continue
            try:
                done = await self._run_sync_batch(sub, handler, batch, ctxs)
            except BaseException as exc:
                if type(exc) is GeneratorExit and generation != self.generation:
                    raise  # closed after its loop died: see reset_pending
                lane.running -= 1
                self._advance_all(batch)
                if isinstance(exc, asyncio.CancelledError) and not self.stopping:
                    continue
                raise
            finally:
                handler = None
            lane.running -= 1
            for index in range(len(batch) - 1, done - 1, -1):  # abandoned or stopped:
                item = batch[index]  # the rest goes back, as chain records
                if type(item) is Event:
                    item = _started_chain(item, sub, ctxs[index])
                lane.mailbox.appendleft(item)
            self._advance_all(batch if done == len(batch) else batch[:done])

    def _take_batch(self, lane: _Lane, limit: int) -> tuple[list[_Batched], list[Context]]:
        """Up to ``limit`` deliveries the lane may start now, in order, and the
        context of each; a non-empty batch holds one running count of the lane (the
        caller releases it when the batch is done), so from the first pop on,
        lanes_idle() in another thread sees work. Bare events and plain
        single-subscription chains are taken in one loop (no call or record per
        event); anything else goes through ``_take``."""
        batch: list[_Batched] = []
        ctxs: list[Context] = []
        mailbox = lane.mailbox
        held = 0
        if self._queued is None and lane.running < lane.sub.concurrency:
            lane.running += 1
            held = 1
            while mailbox and len(batch) < limit:
                entry = mailbox[0]
                if type(entry) is Event:  # bare fire-and-forget event (see _Lane)
                    assert lane.head_ctx is not None
                    ctxs.append(lane.head_ctx)
                elif type(entry) is _Chain:
                    if entry.state != QUEUED or len(entry.subs) != 1:
                        break
                    entry.state = STARTED
                    ctxs.append(entry.ctx)
                    lane.head_ctx = entry.ctx
                else:
                    lane.pop_marker()
                    continue
                mailbox.popleft()
                batch.append(entry)
        take = self._take
        while len(batch) < limit:
            taken = take(lane, held)
            if taken is None:
                break
            if held:
                lane.running -= 1  # the batch keeps the one count it holds
            held = 1
            batch.append(taken)
            ctxs.append(taken.ctx)
        if held and not batch:
            lane.running -= 1
        return batch, ctxs

    def _advance_all(self, chains: list[_Batched]) -> None:
        """``_advance`` for a finished batch; a bare event or a plain fire-and-forget
        chain of an unbounded bus is released with a counter step, idle waiters
        checked once."""
        fin = self._fin
        plain = not self._bounded
        advance = self._advance
        for chain in chains:
            if isinstance(chain, Event):  # bare events exist only on an unbounded bus
                next(fin)
            elif plain and chain.notify is None and len(chain.subs) == 1:
                chain.state = DONE
                next(fin)
            else:
                advance(chain)
        if plain and self._idle_waiters:
            self._wake_idle()

    async def _run_sync_batch(
        self,
        sub: Subscription,
        handler: Callable[[Any], Any],
        batch: list[_Batched],
        ctxs: list[Context],
    ) -> int:
        """Run ``batch`` (each item in its context from ``ctxs``) in one pool thread;
        settle outcomes; return how many finished."""
        loop = self.loop
        assert loop is not None
        progress = _BatchProgress()
        fut = loop.run_in_executor(
            self.executor, self._sync_batch_body, sub, handler, batch, ctxs, progress
        )
        timeout = self.timeout_of(sub)
        if timeout is None:
            await fut
        else:
            while not fut.done():
                index, started = progress.index, progress.started
                if started is None:  # still waiting for a pool thread: not the handler's time
                    await asyncio.wait((fut,), timeout=timeout)
                    continue
                left = started + timeout - _perf()
                if left > 0:
                    await asyncio.wait((fut,), timeout=left)
                    continue
                if progress.index != index or fut.done():
                    continue
                progress.abandoned = True  # the thread cannot be killed: stop waiting for it
                for item, outcome in zip(batch, progress.outcomes[:index], strict=False):
                    self._settle_item(sub, item, outcome)
                late = _event_of(batch[index])
                error = HandlerTimeoutError(
                    f"sync handler {sub.handler_name} exceeded its {timeout}s timeout for "
                    f"{late.event_type} {late.event_id}; the thread "
                    "was abandoned (it keeps running until the handler returns)",
                    sub.handler_name,
                    late.event_id,
                )
                self._settle_item(sub, batch[index], (None, error, True, _perf() - started, 1))
                return index + 1
        outcomes = progress.outcomes
        quiet = self.observer is None
        for item, outcome in zip(batch, outcomes, strict=False):
            if quiet and outcome[1] is None and (isinstance(item, Event) or item.results is None):
                continue  # a success nobody asked about: nothing to report
            self._settle_item(sub, item, outcome)
        return len(outcomes)

    def _settle_item(self, sub: Subscription, item: _Batched, outcome: Outcome) -> None:
        if isinstance(item, Event):
            self.settle(sub, item, None, outcome)
        else:
            self._settle(sub, item, outcome)

    def _sync_batch_body(
        self,
        sub: Subscription,
        handler: Callable[[Any], Any],
        batch: list[_Batched],
        ctxs: list[Context],
        progress: _BatchProgress,
    ) -> None:
        """Pool thread: run the batch in order, recording progress for the watchdog.

        Stops early when the subscription was removed meanwhile; the worker puts
        the unprocessed rest back, and the lane then skips it."""
        outcomes = progress.outcomes
        lane = sub._lane
        if sub.schema is None and not sub.retries and self.span is None:
            # Fast path: plain handler, no retries, no tracing: one context run each.
            # A success nobody asked about is recorded as a shared constant (no
            # per-event allocation: bursts keep the garbage collector's work down).
            quiet = self.observer is None
            append = outcomes.append
            for index, item in enumerate(batch):
                if progress.abandoned or not sub._active or (lane is not None and lane.closing):
                    return
                progress.index = index
                progress.started = start = _perf()
                bare = type(item) is Event
                event = item if bare else item.event  # type: ignore[union-attr]
                # contexts may be shared between events: run in a copy
                value, error = self.call_plain(handler, event, ctxs[index].copy())  # type: ignore[arg-type]
                if error is not None:
                    append((None, error, False, _perf() - start, 1))
                else:
                    if quiet and (bare or item.results is None):  # type: ignore[union-attr]
                        append(_QUIET_OK)
                    else:
                        append((value, None, False, _perf() - start, 1))
                if progress.abandoned:
                    outcomes.pop()
                    return
            return
        call = self.call_sync
        for index, item in enumerate(batch):
            if progress.abandoned or not sub.active or (lane is not None and lane.closing):
                return
            progress.index = index
            progress.started = _perf()
            outcome = call(sub, handler, _event_of(item), ctxs[index], progress)
            if progress.abandoned:
                return
            outcomes.append(outcome)

    # --------------------------------------------------------------- handlers
    def timeout_of(self, sub: Subscription) -> float | None:
        return sub.timeout if sub.timeout is not None else self.default_timeout

    def call_sync(
        self,
        sub: Subscription,
        handler: Callable[[Any], Any],
        event: Event,
        ctx: Context,
        progress: _BatchProgress | None = None,
        measure_timeout: bool = False,
    ) -> Outcome:
        """Call a sync handler (with retries) in a copy of ``ctx``.

        Never raises, except KeyboardInterrupt and SystemExit."""
        attempts = 0
        span = self.span
        first_start = _perf()
        while True:
            attempts += 1
            start = _perf()
            if progress is not None:
                progress.started = start
            error: BaseException | None = None
            value: Any = None
            timed_out = False
            own = ctx.copy()
            try:
                arg = event if sub.schema is None else sub.schema.adapt(event)
                if span is None:
                    value = own.run(_enter, handler, arg, event)
                else:
                    value = own.run(_traced_call, span, sub.handler_name, handler, arg, event)
                if inspect.isawaitable(value):
                    value = self._await_from_thread(value, own)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                error = exc
            duration = _perf() - start
            if error is None and measure_timeout:
                timeout = self.timeout_of(sub)
                if timeout is not None and duration > timeout:
                    return self.overtime(sub, event, _perf() - first_start, timeout, attempts)
            if error is None or attempts > sub.retries or (progress and progress.abandoned):
                return (value, error, timed_out, _perf() - first_start, attempts)
            if self.observer is not None:
                self.observer.handler_retry(sub, event, attempts)
            time.sleep(sub.retry_backoff * (2 ** (attempts - 1)))

    def call_plain(
        self, handler: Callable[[Any], Any], event: Event, own: Context
    ) -> tuple[Any, BaseException | None]:
        """One call of a plain sync handler (no schema, retries or span) in ``own``:
        ``(value, error)``. Only KeyboardInterrupt and SystemExit propagate."""
        try:
            value = own.run(_enter, handler, event, event)
            if value is not None and inspect.isawaitable(value):
                value = self._await_from_thread(value, own)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            return None, exc
        return value, None

    def overtime(
        self, sub: Subscription, event: Event, duration: float, timeout: float, attempts: int = 1
    ) -> Outcome:
        """Outcome of a sync handler that ran inline and returned after its timeout."""
        error = HandlerTimeoutError(
            f"sync handler {sub.handler_name} took {duration:.3f}s, over its "
            f"{timeout}s timeout, for {event.event_type} {event.event_id}; "
            "its result was discarded",
            sub.handler_name,
            event.event_id,
        )
        return (None, error, True, duration, attempts)

    def _await_from_thread(self, awaitable: Any, ctx: Context) -> Any:
        """A sync handler returned an awaitable: finish it on the bus loop, in the
        handler's context, while this (non-loop) thread waits."""
        if self.on_loop_thread():
            raise TypeError("a sync handler returned an awaitable; declare it `async def` instead")
        if self.loop is None and self.need_loop is not None:
            self.need_loop()
        loop = self.loop
        if loop is None:
            raise TypeError("a sync handler returned an awaitable; declare it `async def` instead")
        coro = awaitable if isinstance(awaitable, CoroutineType) else _await_any(awaitable)
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def spawn() -> None:
            task = loop.create_task(coro, context=ctx)
            task.add_done_callback(lambda t: _copy_outcome(t, done))

        loop.call_soon_threadsafe(spawn)
        return done.result()

    async def _deliver_async(
        self, sub: Subscription, handler: Callable[[Any], Any], chain: _Chain
    ) -> None:
        outcome = await self.call_async(sub, handler, chain.event, chain.ctx)
        self._settle(sub, chain, outcome)

    async def call_async(
        self, sub: Subscription, handler: Callable[[Any], Any], event: Event, ctx: Context
    ) -> Outcome:
        """Run an async handler (with retries and timeout) in a copy of ``ctx``.

        Returns the outcome; a cancellation of the running task itself propagates."""
        attempts = 0
        first_start = _perf()
        timeout = self.timeout_of(sub)
        while True:
            attempts += 1
            start = _perf()
            error: BaseException | None = None
            value: Any = None
            timed_out = False
            own = ctx.copy()
            run = own.run
            # the tracing span is entered and left in the handler's own context (no
            # wrapper coroutine), so it is current for every step of the handler
            span = self.span(event, sub.handler_name) if self.span is not None else None
            if span is not None:
                run(span.__enter__)
            try:
                arg = event if sub.schema is None else sub.schema.adapt(event)
                coro = run(_enter_async, handler, arg, event)
                try:
                    yielded = run(coro.send, None)
                except StopIteration as stop:
                    value = stop.value
                else:
                    if timeout is None:
                        value = await drive(own, coro, yielded)
                    else:
                        value, timed_out = await self._drive_with_timeout(
                            own, coro, yielded, start + timeout
                        )
                        if timed_out:
                            error = self._timeout_error(sub, event, timeout)
            except asyncio.CancelledError as exc:
                if _being_cancelled():
                    if span is not None:
                        run(span.__exit__, type(exc), exc, None)
                    raise  # the bus (or the publisher) is being cancelled: let it through
                error = exc
            except Exception as exc:
                error = exc
            except BaseException as exc:
                if span is not None:
                    run(span.__exit__, type(exc), exc, None)
                raise
            if span is not None:
                run(span.__exit__, type(error) if error else None, error, None)
            if error is None or timed_out or attempts > sub.retries:
                return (value, error, timed_out, _perf() - first_start, attempts)
            if self.observer is not None:
                self.observer.handler_retry(sub, event, attempts)
            await asyncio.sleep(sub.retry_backoff * (2 ** (attempts - 1)))

    async def _drive_with_timeout(
        self, ctx: Context, coro: Any, yielded: Any, deadline: float
    ) -> tuple[Any, bool]:
        loop = asyncio.get_running_loop()
        timeout_cm = asyncio.timeout_at(loop.time() + max(0.0, deadline - _perf()))
        try:
            async with timeout_cm:
                return await drive(ctx, coro, yielded), False
        except TimeoutError:
            if timeout_cm.expired():
                return None, True
            raise

    def _settle(self, sub: Subscription, chain: _Chain, outcome: Outcome) -> None:
        self.settle(sub, chain.event, chain.results, outcome)

    def settle(
        self,
        sub: Subscription,
        event: Event,
        results: list[HandlerResult] | None,
        outcome: Outcome,
    ) -> None:
        """Report a finished handler call: failure sink, observer, result list."""
        value, error, timed_out, duration, attempts = outcome
        if error is not None:
            self.on_failure(sub, event, error, timed_out, attempts, duration)
        if self.observer is not None:
            self.observer.handler_finished(sub, event, duration, error, timed_out, attempts)
        if results is not None:
            results.append(
                _handler_result(
                    sub.subscription_id, sub.handler_name, value, error, timed_out, duration, attempts
                )
            )

    # --------------------------------------------------------- chain progress
    def _advance(self, chain: _Chain) -> None:
        if len(chain.subs) == 1:
            self._finish(chain)
            return
        if self.parallel:
            chain.remaining -= 1
            if chain.remaining == 0:
                self._finish(chain)
            return
        chain.idx += 1
        if chain.idx >= len(chain.subs):
            self._finish(chain)
        else:
            lane = chain.subs[chain.idx]._lane
            if lane is not None:
                lane.wake()

    def _finish(self, chain: _Chain) -> None:
        chain.state = DONE
        notify = chain.notify
        if notify is not None:
            notify(chain)
        self.release()

    # ------------------------------------------------------------ direct path
    def lanes_idle(self, subs: tuple[Subscription, ...]) -> bool:
        """True when no subscription in ``subs`` has queued or running work."""
        for sub in subs:
            lane = sub._lane
            if lane is not None and (lane.running or lane.mailbox):
                return False
        return not self._ingress

    async def run_direct(self, chain: _Chain) -> None:
        """Run ``chain`` in the calling task: no queue hop, no task switch.

        Used when every lane of the event is idle, and for waited publishes made
        inside a handler (which must not wait behind the lanes their caller holds).
        Every lane is reserved up front, so events that arrive meanwhile queue
        behind this one. If the caller is cancelled, the running handler is
        cancelled with it (logged, not reported as a handler failure) and the rest
        of the chain is handed to the lanes.
        """
        generation = self.generation
        if not self._start(chain):
            return  # dropped by DROP_OLDEST before it started
        subs = chain.subs
        if len(subs) == 1:
            await self._run_direct_one(chain, subs[0])
            return
        lanes = [
            self._reserve_lane(sub) if sub.active and sub.handler is not None else None
            for sub in subs
        ]
        index = 0
        try:
            for index, sub in enumerate(subs):
                lane = lanes[index]
                if lane is None:
                    continue
                try:
                    handler = sub.handler
                    if handler is not None and sub.active:
                        await self._deliver_direct(sub, handler, chain)
                finally:
                    lanes[index] = None
                    self._release_lane(lane)
        except BaseException as exc:
            if type(exc) is GeneratorExit and generation != self.generation:
                raise  # closed after its loop died: see reset_pending
            for lane in lanes:  # the reservations not reached
                if lane is not None:
                    self._release_lane(lane)
            if isinstance(exc, asyncio.CancelledError) and self.on_cancelled is not None:
                self.on_cancelled(subs[index], chain.event)
            self._hand_rest_to_lanes(chain, index + 1)
            raise
        self._finish(chain)

    async def _run_direct_one(self, chain: _Chain, sub: Subscription) -> None:
        """``run_direct`` for the common single-subscription event."""
        handler = sub._strong or sub.handler
        if handler is None or not sub._active:
            self._finish(chain)
            return
        lane = self._reserve_lane(sub)
        generation = self.generation
        try:
            if (
                sub.is_async
                and sub.schema is None
                and not sub.retries
                and (self.span is None or self.span(chain.event, sub.handler_name) is None)
            ):
                # the common case: step the handler here, await only if it suspends
                step = self._step(handler, chain, chain.ctx.copy(), _perf())
                if type(step) is _Suspended:
                    step = await self._finish_async(
                        sub, step.ctx, step.coro, step.yielded, chain.event, step.start
                    )
                self._settle(sub, chain, step)  # type: ignore[arg-type]
            else:
                await self._deliver_direct(sub, handler, chain)
        except BaseException as exc:
            if type(exc) is GeneratorExit and generation != self.generation:
                raise  # closed after its loop died: see reset_pending
            if isinstance(exc, asyncio.CancelledError) and self.on_cancelled is not None:
                self.on_cancelled(sub, chain.event)
            self._finish(chain)
            raise
        finally:
            self._release_lane(lane)
        self._finish(chain)

    def _reserve_lane(self, sub: Subscription) -> _Lane:
        """Count a direct delivery as running on ``sub``'s lane (opened if needed)."""
        lane: _Lane | None = sub._lane
        if lane is None or lane.closing or lane.dead:
            lane = self._open_lane(sub)
        lane.running += 1
        return lane

    def _release_lane(self, lane: _Lane) -> None:
        while lane.successor is not None:  # the lane died meanwhile: its count moved on
            lane = lane.successor
        lane.running -= 1
        if lane.mailbox:
            lane.wake()

    async def _deliver_direct(
        self, sub: Subscription, handler: Callable[[Any], Any], chain: _Chain
    ) -> None:
        """One handler of a direct chain; failures of any type but cancellation and
        interpreter exit are settled as that handler's failure."""
        try:
            if sub.is_async:
                await self._deliver_async(sub, handler, chain)
            else:
                await self._run_sync_batch(sub, handler, [chain], [chain.ctx])
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self._settle(sub, chain, (None, exc, False, 0.0, 1))

    def _hand_rest_to_lanes(self, chain: _Chain, start: int) -> None:
        rest = chain.subs[start:]
        if not rest:
            self._finish(chain)
            return
        chain.subs = rest
        chain.idx = 0
        chain.remaining = len(rest)
        self._dispatch(chain)

    # ------------------------------------------------------------------- idle
    def add_idle_waiter(self, wake: Callable[[], None]) -> bool:
        """Register ``wake`` for when nothing is pending; False if already idle."""
        with self._lock:
            if self.pending == 0:
                return False
            self._idle_waiters.append(wake)
            return True

    def remove_idle_waiter(self, wake: Callable[[], None]) -> None:
        with self._lock:
            if wake in self._idle_waiters:
                self._idle_waiters.remove(wake)

    def queue_depth(self) -> int:
        """Events accepted but not yet started by any handler."""
        return sum(len(lane.mailbox) - lane.markers for lane in list(self._lanes)) + len(
            self._ingress
        )

    async def stop_lanes(self) -> None:
        """Cancel every lane worker (after draining); used by close."""
        self.stopping = True
        tasks = [t for lane in list(self._lanes) for t in lane.workers]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def abandon(self, reason: str) -> int:
        """After stop_lanes: resolve everyone still waiting on this engine.

        Publishers awaiting queued events get a not-accepted result, publishers
        blocked under BLOCK get ``BusClosedError``. Returns the number of events
        that were never handled."""
        lost: list[_Entry | _NewEvent] = []
        for lane in list(self._lanes):
            lost.extend(lane.mailbox)
            lane.mailbox.clear()
            lane.markers = 0
        lost.extend(self._ingress)
        self._ingress.clear()
        self._lanes.clear()
        seen: set[int] = set()
        count = 0
        for chain in lost:
            if type(chain) is Event or isinstance(chain, tuple):  # bare fire-and-forget event
                count += 1  # nobody waits for it
                continue
            if type(chain) is not _Chain or id(chain) in seen:
                continue  # a context marker, or a chain seen in another lane
            if chain.state in (DONE, DROPPED, ABANDONED):
                continue
            seen.add(id(chain))
            count += 1
            chain.state = ABANDONED
            if chain.notify is not None:
                chain.notify(chain)
        with self._lock:
            waiters, self._blocked = list(self._blocked), deque()
            for waiter in waiters:
                waiter.error = BusClosedError(f"the bus was closed ({reason}) while waiting for a slot")
                waiter.granted = True
        for waiter in waiters:
            waiter.grant(self.loop)
        return count


def _event_of(item: _Batched) -> Event:
    return item if type(item) is Event else item.event  # type: ignore[union-attr]


def _started_chain(event: Event, sub: Subscription, ctx: Context) -> _Chain:
    """The chain record of a bare mailbox event, made when a path needs one."""
    chain = _Chain(event, (sub,), ctx, None, None)
    chain.state = STARTED
    return chain


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _copy_outcome(task: asyncio.Task[Any], done: concurrent.futures.Future[Any]) -> None:
    if task.cancelled():
        done.set_exception(asyncio.CancelledError())
    elif task.exception() is not None:
        done.set_exception(task.exception())
    else:
        done.set_result(task.result())
