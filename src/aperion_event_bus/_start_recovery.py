"""Redelivery on start: a durable subscription's unacknowledged deliveries are queued
to it once per bus, before any event published after that moment can reach it.

"Start" is, for each durable name, the first of: the bus binding its event loop
(names subscribed by then; the first publish, emit, ``recover`` or ``replay`` binds
it) or the name being subscribed on a bus already bound. The deliveries are read
from the store and queued in publish order at that moment, synchronously, so the
events published next queue behind them (per subscription order holds). ``recover``
waits for these redeliveries instead of queueing them a second time.
"""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Callable, Iterable
from contextvars import Context, copy_context
from typing import TYPE_CHECKING

from ._wiring import library_logger
from .dispatch import Dispatcher, _Chain
from .durable import _recovering
from .events import Event
from .subscriptions import Subscription

if TYPE_CHECKING:
    from .storage.sqlite import SQLiteStore

__all__ = ["StartRecovery", "queue_redeliveries", "recovering_context"]

logger = library_logger("aperion_event_bus.bus")


def recovering_context() -> Context:
    """A context whose deliveries count as redeliveries (attempts recorded exactly)."""
    ctx = copy_context()
    ctx.run(_recovering.set, True)
    return ctx


def queue_redeliveries(
    d: Dispatcher,
    sub: Subscription,
    events: list[Event],
    ctx: Context,
    on_done: Callable[[], object],
) -> None:
    """Queue ``events`` (in order) for ``sub`` alone, from any thread; ``on_done``
    runs on the bus loop once every one of them was handled."""
    left = len(events)

    def notify(_chain: _Chain) -> None:  # on the bus loop thread only
        nonlocal left
        left -= 1
        if left == 0:
            on_done()

    for event in events:
        d.admit_forced()
        d.enqueue(_Chain(event, (sub,), ctx, notify, None))


class StartRecovery:
    """The redeliveries on start of one bus (see the module doc). The bus calls
    ``read`` and then ``queue`` under its bind lock, reading before the loop is
    visible to other threads (or before a late subscription is registered), so no
    event appended after the read can be both redelivered and delivered."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._started: set[str] = set()  # durable names whose start has passed
        #: name -> (deliveries queued, resolved once all were handled); the count
        #: drops to 0 once ``take`` reported it
        self._running: dict[str, tuple[int, concurrent.futures.Future[None]]] = {}

    def read(
        self, subscriptions: Iterable[tuple[Subscription, str]]
    ) -> list[tuple[Subscription, str, list[Event]]]:
        """The pending deliveries of each (subscription, name) not started yet. A
        name whose read fails is logged and left to ``recover()``."""
        found = []
        for sub, name in subscriptions:
            if name in self._started:
                continue
            try:
                pending = self._store.pending_deliveries(name)
            except Exception:
                logger.exception(
                    "could not read the pending deliveries of %r at start; "
                    "`await bus.recover()` redelivers them once the store is readable",
                    name,
                )
                continue
            found.append((sub, name, [event for event, _ in pending]))
        return found

    def queue(self, d: Dispatcher, reads: list[tuple[Subscription, str, list[Event]]]) -> None:
        """Queue what ``read`` found, each name's deliveries in publish order."""
        for sub, name, events in reads:
            self._started.add(name)
            if not events:
                continue
            finished: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._running[name] = (len(events), finished)
            queue_redeliveries(
                d, sub, events, recovering_context(), functools.partial(_resolve_once, finished)
            )

    def reset(self) -> None:
        """The loop was closed under the bus: what it had queued is lost, so every
        name starts again on the next loop (and nobody waits for the lost ones)."""
        for _, finished in self._running.values():
            _resolve_once(finished)
        self._running.clear()
        self._started.clear()

    def take(self, name: str) -> tuple[int, concurrent.futures.Future[None]] | None:
        """The redeliveries on start of ``name`` for ``recover`` to wait for: the first
        call gets their number (finished or not; each is reported once), later calls
        get 0 while they are still being handled, and None once they are over."""
        entry = self._running.get(name)
        if entry is None:
            return None
        count, finished = entry
        if count:
            self._running[name] = (0, finished)
        elif finished.done():
            del self._running[name]
            return None
        return entry


def _resolve_once(finished: concurrent.futures.Future[None]) -> None:
    if not finished.done():
        finished.set_result(None)
