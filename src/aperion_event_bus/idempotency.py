"""Idempotent handlers: skip events whose id was already processed.

At-least-once delivery (durable subscriptions, ``bus.recover()``) can deliver an
event twice; wrap the handler so a duplicate is skipped, keyed by ``event_id``::

    bus.on("order.paid", idempotent(charge), name="billing", durable=True)

``seen`` defaults to a bounded in-memory LRU (``maxsize`` ids), which protects
one process; pass your own set-like object (``__contains__`` + ``add``), e.g. one
backed by a database table, to survive restarts. An id is remembered only after
the handler succeeded, so a failed attempt is retried.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from .context import _current_event
from .subscriptions import is_async_callable

__all__ = ["IdempotentHandler", "LRUSeen", "SeenStore", "idempotent"]


class SeenStore(Protocol):
    def __contains__(self, event_id: object) -> bool: ...

    def add(self, event_id: str) -> None: ...


class LRUSeen:
    """A bounded, thread-safe set of the ``maxsize`` most recently added ids."""

    def __init__(self, maxsize: int = 100_000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, event_id: object) -> bool:
        with self._lock:
            if event_id in self._ids:
                self._ids.move_to_end(event_id)  # type: ignore[arg-type]
                return True
            return False

    def add(self, event_id: str) -> None:
        with self._lock:
            self._ids[event_id] = None
            self._ids.move_to_end(event_id)
            while len(self._ids) > self.maxsize:
                self._ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)


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
