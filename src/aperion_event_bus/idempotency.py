"""Idempotent handlers: skip events whose id was already processed.

At-least-once delivery (durable subscriptions, ``bus.recover()``) can deliver an
event twice; wrap the handler so a duplicate is skipped, keyed by ``event_id``::

    bus.on("order.paid", idempotent(charge), name="billing", durable=True)

``seen`` defaults to a bounded in-memory LRU (at least the ``maxsize`` most recent
ids), which protects one process; pass your own set-like object (``__contains__`` + ``add``), e.g. one
backed by a database table, to survive restarts. An id is remembered only after
the handler succeeded, so a failed attempt is retried.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

from .context import _current_event
from .subscriptions import is_async_callable

__all__ = ["IdempotentHandler", "LRUSeen", "SeenStore", "idempotent"]


class SeenStore(Protocol):
    def __contains__(self, event_id: object) -> bool: ...

    def add(self, event_id: str) -> None: ...


#: Ids per generation of ``LRUSeen``: small enough that no insert rebuilds a large
#: table (an ``OrderedDict`` of 100,000 ids did, blocking the event loop for up to
#: ~15 ms every ~30,000 adds), large enough that a miss checks few generations.
_GENERATION: Final = 8192


class LRUSeen:
    """A bounded, thread-safe set of recently added ids.

    It always holds the ``maxsize`` ids most recently added or found (a hit counts
    as use), and at most ``maxsize + 2 * 8192``. The ids live in generations of
    8,192, newest first; a hit in an older generation moves the id to the newest,
    and whole generations are forgotten, oldest first, while the rest still hold
    ``maxsize`` ids. Every operation is O(generations) at worst and never rebuilds
    a large table, so it cannot stall the event loop.
    """

    def __init__(self, maxsize: int = 100_000) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize!r}")
        self.maxsize = maxsize
        self._generation_size = min(maxsize, _GENERATION)
        self._young: set[str] = set()
        self._old: deque[set[str]] = deque()  # newest first
        self._count = 0  # ids in all generations (each id is in one)
        self._lock = threading.Lock()

    def __contains__(self, event_id: object) -> bool:
        with self._lock:
            if event_id in self._young:
                return True
            if self._take_from_old(event_id):
                self._insert(event_id)  # type: ignore[arg-type]  # found: a str
                return True
            return False

    def add(self, event_id: str) -> None:
        with self._lock:
            if event_id in self._young:
                return
            self._take_from_old(event_id)
            self._insert(event_id)

    def __len__(self) -> int:
        return self._count

    def _take_from_old(self, event_id: object) -> bool:
        for generation in self._old:
            if event_id in generation:
                generation.discard(event_id)
                self._count -= 1
                if not generation:  # emptied by hits: never walk it again
                    self._old.remove(generation)
                return True
        return False

    def _insert(self, event_id: str) -> None:
        young = self._young
        young.add(event_id)
        self._count += 1
        if len(young) >= self._generation_size:
            old = self._old
            old.appendleft(young)
            self._young = set()
            while self._count - len(old[-1]) >= self.maxsize:
                self._count -= len(old.pop())


def _event_id_of(arg: Any) -> str:
    event = _current_event.get()
    if event is not None:
        return event.event_id
    event_id = getattr(arg, "event_id", None)
    if not isinstance(event_id, str):
        raise TypeError("idempotent handlers need an Event (or to run inside a bus delivery)")
    return event_id


class IdempotentHandler:
    """Wraps a sync handler; see the module doc. ``skipped`` counts duplicates."""

    def __init__(
        self, handler: Callable[..., Any], seen: SeenStore | None = None, maxsize: int = 100_000
    ) -> None:
        self.handler = handler
        self.seen: SeenStore = seen if seen is not None else LRUSeen(maxsize)
        self.skipped = 0
        self.__name__ = getattr(handler, "__name__", type(handler).__name__)
        self.__qualname__ = getattr(handler, "__qualname__", self.__name__)
        self.__module__ = getattr(handler, "__module__", __name__)

    def __call__(self, arg: Any) -> Any:
        event_id = _event_id_of(arg)
        if event_id in self.seen:
            self.skipped += 1
            return None
        result = self.handler(arg)
        self.seen.add(event_id)
        return result


class AsyncIdempotentHandler(IdempotentHandler):
    """``IdempotentHandler`` for ``async def`` handlers."""

    async def __call__(self, arg: Any) -> Any:
        event_id = _event_id_of(arg)
        if event_id in self.seen:
            self.skipped += 1
            return None
        result = await self.handler(arg)
        self.seen.add(event_id)
        return result


def idempotent(
    handler: Callable[..., Any], seen: SeenStore | None = None, maxsize: int = 100_000
) -> IdempotentHandler:
    """Wrap ``handler`` (sync or async) so each event id is processed at most once
    (per ``seen``)."""
    if is_async_callable(handler):
        return AsyncIdempotentHandler(handler, seen, maxsize)
    return IdempotentHandler(handler, seen, maxsize)
