"""Subscriptions and the registry that matches event types to them.

Matching is cached per event type, so dispatch cost does not grow with the number
of subscriptions that do not match; the cache is rebuilt after every subscribe or
unsubscribe. Bound methods are held weakly by default so a subscriber object that
goes away does not leak; functions, lambdas and closures are held strongly.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._ids import new_id
from .errors import ValidationError
from .patterns import Matcher, compile_pattern, validate_pattern

if TYPE_CHECKING:
    from .typed import EventSchema

__all__ = ["Subscription", "SubscriptionRegistry", "handler_name", "is_async_callable"]

Handler = Callable[..., Any]
_MAX_CACHED_TYPES = 10_000


def is_async_callable(obj: Any) -> bool:
    """True for ``async def`` functions (also wrapped in partial) and objects with async ``__call__``."""
    while hasattr(obj, "func") and not inspect.isfunction(obj):  # functools.partial chains
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004
    return call is not None and not inspect.isfunction(obj) and inspect.iscoroutinefunction(call)


def handler_name(handler: Any) -> str:
    """A readable name for logs and metrics: ``module.qualname``."""
    target = getattr(handler, "func", handler)
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None) or type(target).__module__
    return f"{module}.{qualname}" if module else qualname


class Subscription:
    """One handler subscribed to one or more event-type patterns.

    1.x signature: ``Subscription(handler, event_types, priority=100, active=True,
    metadata=None, subscription_id=None)``; the keyword-only options are the new API
    (``timeout`` None means the bus default; ``retries`` extra attempts with
    exponential ``retry_backoff`` seconds; ``concurrency`` > 1 lets deliveries to
    this subscription overlap and gives up its per-subscription ordering).
    """

    __slots__ = (
        "__weakref__",
        "_active",
        "_lane",
        "_matchers",
        "_on_change",
        "_ref",
        "_strong",
        "concurrency",
        "event_types",
        "handler_name",
        "is_async",
        "metadata",
        "name",
        "priority",
        "retries",
        "retry_backoff",
        "schema",
        "subscription_id",
        "timeout",
        "weak",
    )

    def __init__(
        self,
        handler: Handler,
        event_types: Iterable[str] | str,
        priority: int = 100,
        active: bool = True,
        metadata: Mapping[str, Any] | None = None,
        subscription_id: str | None = None,
        *,
        name: str | None = None,
        timeout: float | None = None,
        retries: int = 0,
        retry_backoff: float = 0.1,
        concurrency: int = 1,
        weak: bool = True,
        schema: EventSchema | None = None,
        on_dead: Callable[[Subscription], None] | None = None,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__qualname__}")
        patterns = [event_types] if isinstance(event_types, str) else list(event_types)
        if not patterns:
            raise ValueError("subscribe to at least one event type or pattern (e.g. 'user.*')")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds or None")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if retry_backoff < 0:
            raise ValueError("retry_backoff must be >= 0 seconds")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.event_types = {validate_pattern(p) for p in patterns}
        self._matchers: tuple[Matcher, ...] = tuple(compile_pattern(p) for p in self.event_types)
        self.priority = priority
        self._on_change: Callable[[], None] | None = None
        self._active = active
        self.metadata = dict(metadata) if metadata else {}
        self.subscription_id = subscription_id or new_id("sub_")
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.concurrency = concurrency
        self.schema = schema
        self.is_async = is_async_callable(handler)
        self.handler_name = name or handler_name(handler)
        self._lane: Any = None
        self.weak = weak and inspect.ismethod(handler)
        self._strong: Handler | None
        if self.weak:
            callback = None
            if on_dead is not None:
                self_ref = weakref.ref(self)

                def callback(_: object) -> None:
                    sub = self_ref()
                    if sub is not None:
                        on_dead(sub)

            self._ref: weakref.WeakMethod[Any] | None = weakref.WeakMethod(handler, callback)
            self._strong = None
        else:
            self._ref = None
            self._strong = handler

    @property
    def active(self) -> bool:
        """Inactive subscriptions match nothing; setting this takes effect at once."""
        return self._active

    @active.setter
    def active(self, value: bool) -> None:
        self._active = bool(value)
        if self._on_change is not None:
            self._on_change()

    @property
    def handler(self) -> Handler | None:
        """The handler, or None when it was a bound method whose object is gone."""
        if self._strong is not None:
            return self._strong
        assert self._ref is not None
        return self._ref()

    @property
    def alive(self) -> bool:
        return self.active and self.handler is not None

    def matches(self, event_type: str) -> bool:
        """True when active and one of the patterns matches ``event_type``."""
        return self._active and any(m(event_type) for m in self._matchers)

    def __repr__(self) -> str:
        return (
            f"Subscription(id={self.subscription_id!r}, handler={self.handler_name!r}, "
            f"event_types={sorted(self.event_types)!r}, priority={self.priority}, "
            f"active={self.active})"
        )


class SubscriptionRegistry:
    """Ordered subscriptions (highest priority first, stable) with a per-type match cache."""

    def __init__(self) -> None:
        # Re-entrant: a weakly held subscriber can be collected (and removed) while
        # this thread is inside add/remove.
        self._lock = threading.RLock()
        self._subs: tuple[Subscription, ...] = ()
        self.cache: dict[str, tuple[Subscription, ...]] = {}
        self._version = 0

    def add(self, sub: Subscription) -> None:
        sub._on_change = self._invalidate
        with self._lock:
            subs = [s for s in self._subs if s.handler is not None]
            # stable: insert after every subscription with priority >= sub.priority
            index = len(subs)
            for i, existing in enumerate(subs):
                if existing.priority < sub.priority:
                    index = i
                    break
            subs.insert(index, sub)
            self._replace(tuple(subs))

    def remove(self, subscription_id: str) -> Subscription | None:
        with self._lock:
            for sub in self._subs:
                if sub.subscription_id == subscription_id:
                    sub.active = False
                    self._replace(tuple(s for s in self._subs if s is not sub))
                    return sub
        return None

    def remove_where(self, predicate: Callable[[Subscription], bool]) -> list[Subscription]:
        with self._lock:
            gone = [s for s in self._subs if predicate(s)]
            if gone:
                for sub in gone:
                    sub.active = False
                self._replace(tuple(s for s in self._subs if s not in gone))
        return gone

    def _replace(self, subs: tuple[Subscription, ...]) -> None:
        self._subs = subs
        self._invalidate()

    def _invalidate(self) -> None:
        with self._lock:
            self.cache = {}
            self._version += 1

    def get(self, subscription_id: str) -> Subscription | None:
        for sub in self._subs:
            if sub.subscription_id == subscription_id:
                return sub
        return None

    def all(self) -> tuple[Subscription, ...]:
        """Subscriptions in priority order (weakly held ones whose object is gone excluded)."""
        return tuple(s for s in self._subs if s.handler is not None)

    def __len__(self) -> int:
        return len(self._subs)

    def match(self, event_type: str) -> tuple[Subscription, ...]:
        """Active subscriptions for ``event_type``, highest priority first (cached).

        Every publish path matches its event type here (the C ``publish_nowait``
        too), so a type is checked once, on its cache miss, not per event: a
        whitespace-only type raises ValidationError, as in 1.x, and is never cached."""
        found = self.cache.get(event_type)
        if found is not None:
            return found
        if event_type.isspace():
            raise ValidationError("event_type must be a non-empty string", event_type)
        version = self._version
        cache = self.cache
        found = tuple(s for s in self._subs if s.matches(event_type))
        with self._lock:
            if self._version == version and self.cache is cache:
                if len(cache) >= _MAX_CACHED_TYPES:  # many ad-hoc types: start over
                    cache.clear()
                cache[event_type] = found
        return found

    def event_types(self) -> list[str]:
        return sorted({p for s in self._subs for p in s.event_types})
