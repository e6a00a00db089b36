"""Redelivery and replay of stored events: the store-facing half of ``EventBus``.

``recover`` hands every unacknowledged delivery of a durable subscription back to
that subscription's lane, in publish order; ``replay`` runs stored events through
one handler. Both are called through the ``EventBus`` methods of the same names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from contextvars import Context, copy_context
from typing import TYPE_CHECKING, Any

from ._start_recovery import queue_redeliveries, recovering_context
from ._wiring import library_logger
from .dispatch import Dispatcher, _resolve
from .durable import _replaying
from .errors import ValidationError
from .events import Event
from .patterns import compile_pattern
from .subscriptions import Subscription

if TYPE_CHECKING:
    from .bus import EventBus
    from .storage.sqlite import SQLiteStore

__all__ = ["deliver_to", "recover", "replay"]

logger = library_logger("aperion_event_bus.bus")


async def recover(bus: EventBus, store: SQLiteStore) -> int:
    """See ``EventBus.recover``."""
    d = bus._ensure_loop()  # the first binding queues the redeliveries on start
    await store.flush()  # acks queued with ack_nowait must not look pending
    total = 0
    for sub, name in bus._durable_subscriptions():
        on_start = bus._start_recovery.take(name) if bus._start_recovery else None
        if on_start is not None:  # queued on start already: wait, never queue twice
            count, finished = on_start
            await asyncio.wrap_future(finished)
            total += count
            continue
        pending = await asyncio.to_thread(store.pending_deliveries, name)
        if pending:
            await deliver_to(d, sub, [event for event, _ in pending], recovering_context())
            total += len(pending)
    return total


async def deliver_to(d: Dispatcher, sub: Subscription, events: list[Event], ctx: Context) -> None:
    """Queue ``events`` (in order) for ``sub`` alone and wait until all are handled."""
    caller_loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = caller_loop.create_future()
    if d.on_loop_thread():
        queue_redeliveries(d, sub, events, ctx, lambda: _resolve(done))
    else:
        queue_redeliveries(
            d, sub, events, ctx, lambda: caller_loop.call_soon_threadsafe(_resolve, done)
        )
    await done


async def replay(
    bus: EventBus,
    store: SQLiteStore,
    since: float | None,
    until: float | None,
    types: Sequence[str] | None,
    correlation_id: str | None,
    to: Subscription | Callable[..., Any],
) -> int:
    """See ``EventBus.replay``."""
    keep: Callable[[str], bool] | None = None  # a check the store's filter cannot do
    if isinstance(to, Subscription):
        sub = to
        if types is None:  # the store filters by the subscription's own patterns
            types = sorted(sub.event_types)
        elif "*" not in sub.event_types:  # both must match: the subscription's in Python
            keep = _any_of(sub.event_types)
    elif callable(to):
        sub = Subscription(to, ["*"], weak=False)
    else:
        raise ValidationError("replay(to=...) takes a handler or a Subscription")
    handler = sub.handler
    if handler is None:
        raise ValidationError(f"the handler of {sub!r} is gone")
    d = bus._ensure_loop()
    loop = d.loop
    assert loop is not None
    ctx = copy_context()
    ctx.run(_replaying.set, True)
    count = 0
    on_loop = d.on_loop_thread()  # this task stays on its loop
    async for page in store.aiter_pages(since, until, types, correlation_id):
        events = page if keep is None else [e for e in page if keep(e.event_type)]
        if not events:
            continue
        if sub.is_async:
            for event in events:
                call = d.call_async(sub, handler, event, ctx)
                if on_loop:
                    outcome = await call
                else:
                    outcome = await asyncio.wrap_future(
                        asyncio.run_coroutine_threadsafe(call, loop)
                    )
                _log_replay_failure(bus, sub, event, outcome[1])
                count += 1
        else:
            # a sync handler runs in a worker thread: one hop per page, not per event
            # (the events still go one at a time, in order); a cancelled replay
            # starts no further event (``stop``), as with a hop per event
            stop: list[bool] = []
            try:
                errors = await asyncio.to_thread(_call_sync_page, d, sub, handler, events, ctx, stop)
            except BaseException:
                stop.append(True)
                raise
            for event, error in zip(events, errors, strict=False):
                _log_replay_failure(bus, sub, event, error)
            count += len(errors)
    return count


def _any_of(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A predicate: does an event type match one of ``patterns`` (active or not)."""
    matchers = [compile_pattern(p) for p in patterns]
    return lambda event_type: any(m(event_type) for m in matchers)


def _call_sync_page(
    d: Dispatcher,
    sub: Subscription,
    handler: Callable[..., Any],
    events: list[Event],
    ctx: Context,
    stop: list[bool],
) -> list[BaseException | None]:
    """Worker thread: call the handler for each event of a page, until ``stop`` is
    set; the error of each call (None: handled).

    A plain handler (no schema, retries or span) takes the dispatcher's own fast
    path, ``call_plain`` in a copy of ``ctx`` (what ``call_sync`` does for it, minus
    the timing and the outcome tuple nobody reads here)."""
    errors: list[BaseException | None] = []
    append = errors.append
    if sub.schema is None and not sub.retries and d.span is None:
        call_plain = d.call_plain
        for event in events:
            if stop:
                break
            append(call_plain(handler, event, ctx.copy())[1])
        return errors
    for event in events:
        if stop:
            break
        append(d.call_sync(sub, handler, event, ctx)[1])
    return errors


def _log_replay_failure(
    bus: EventBus, sub: Subscription, event: Event, error: BaseException | None
) -> None:
    if error is not None:
        logger.warning(
            "replay of %s %s to %s failed: %s: %s",
            event.event_type,
            event.event_id,
            sub.handler_name,
            type(error).__name__,
            bus._redactor.redact_string(str(error)),
        )
