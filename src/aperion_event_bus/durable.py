"""Delivery context for durable subscriptions: attempt number, replay flag, tracking adapter.

``delivery_attempt()`` and ``is_replay()`` are read inside a handler. A subscription
made with ``durable=True`` (on a bus with a store) gets its handler wrapped, at
subscribe time, in a ``_DurableAsync``/``_DurableSync`` adapter: it records the
attempt in the store before calling the handler and queues the ack after success.
The dispatcher never sees the store, so buses without one pay nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ._driver import finish_here
from .context import _current_event

if TYPE_CHECKING:
    from .storage.sqlite import SQLiteStore

__all__ = ["delivery_attempt", "is_replay"]

_attempt: ContextVar[int] = ContextVar("aperion_delivery_attempt", default=1)
_replaying: ContextVar[bool] = ContextVar("aperion_replaying", default=False)
# set by bus.recover(): redeliveries record their attempt exactly (awaited) before running
_recovering: ContextVar[bool] = ContextVar("aperion_recovering", default=False)


def delivery_attempt() -> int:
    """The attempt number of the current delivery: 1 normally, N when it is redelivered
    (by ``bus.recover()`` after a crash or failure, or by a retry of a durable subscription)."""
    return _attempt.get()


def is_replay() -> bool:
    """True inside a handler called by ``bus.replay(...)``."""
    return _replaying.get()


class _Durable:
    """Shared part of the adapters; compares equal to the wrapped handler (for ``bus.off``)."""

    def __init__(
        self, handler: Callable[..., Any], store: SQLiteStore, name: str, retries: int = 0
    ) -> None:
        self.handler = handler
        self.store = store
        self.name = name
        self.retries = retries
        self._inflight: dict[str, int] = {}  # event id -> attempts made in this process
        self.__name__ = getattr(handler, "__name__", name)
        self.__qualname__ = getattr(handler, "__qualname__", name)
        self.__module__ = getattr(handler, "__module__", __name__)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Durable):
            return bool(self.handler == other.handler)
        return bool(self.handler == other)

    def __hash__(self) -> int:
        return hash(self.handler)

    def _event_id(self) -> str | None:
        if _replaying.get():
            return None  # replays are not tracked deliveries
        event = _current_event.get()
        return None if event is None else event.event_id


    def _begin_first(self, event_id: str) -> None:
        """A first delivery (and its in-process retries): count the attempt without
        waiting for the disk. In-process retries are numbered from memory."""
        attempt = self._inflight.get(event_id, 0) + 1
        self._inflight[event_id] = attempt
        self.store.record_attempt_nowait(event_id, self.name)
        _attempt.set(attempt)

    def _end(self, event_id: str, ok: bool) -> None:
        attempt = self._inflight.get(event_id)
        if ok:
            self._inflight.pop(event_id, None)
            self.store.ack_nowait(event_id, self.name)
        elif attempt is not None and attempt > self.retries:
            self._inflight.pop(event_id, None)  # final failure: stays pending in the store


class _DurableAsync(_Durable):
    async def __call__(self, arg: Any) -> Any:
        event_id = self._event_id()
        if event_id is None:
            return await self.handler(arg)
        if _recovering.get():
            _attempt.set(max(await self.store.record_attempt(event_id, self.name), 1))
            return await self._tracked(event_id, arg)
        # First delivery: a handler that finishes without suspending cannot be cut
        # short by a crash after it started, so only a suspending one records its
        # attempt (one store write less per event on the hot path). Likewise it is
        # only entered in _inflight (which numbers in-process retries) when it
        # suspends or fails, and the context variable is only set when it differs.
        inflight = self._inflight
        attempt = inflight.get(event_id, 0) + 1
        if attempt > 1:
            inflight[event_id] = attempt
        if _attempt.get() != attempt:
            _attempt.set(attempt)
        coro = self.handler(arg)
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            if attempt > 1:
                del inflight[event_id]
            self.store.ack_nowait(event_id, self.name)
            return stop.value
        except BaseException:
            inflight[event_id] = attempt
            self.store.record_attempt_nowait(event_id, self.name)  # a failed attempt counts
            self._end(event_id, False)
            raise
        inflight[event_id] = attempt
        self.store.record_attempt_nowait(event_id, self.name)
        try:
            result = await finish_here(coro, yielded)
        except BaseException:
            self._end(event_id, False)
            raise
        self._end(event_id, True)
        return result

    async def _tracked(self, event_id: str, arg: Any) -> Any:
        try:
            result = await self.handler(arg)
        except BaseException:
            self._end(event_id, False)
            raise
        self._end(event_id, True)
        return result


class _DurableSync(_Durable):
    def __call__(self, arg: Any) -> Any:
        event_id = self._event_id()
        if event_id is None:
            return self.handler(arg)
        if _recovering.get():
            _attempt.set(max(self.store.record_attempt_sync(event_id, self.name), 1))
        else:
            self._begin_first(event_id)
        try:
            result = self.handler(arg)
        except BaseException:
            self._end(event_id, False)
            raise
        self._end(event_id, True)
        return result
