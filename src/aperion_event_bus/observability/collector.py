"""MetricsCollector: turns bus activity into named measurements on a backend.

The collector always keeps a small set of exact, in-process statistics (counts
per event type and per handler, live gauges) so ``get_snapshot()`` and
``bus.get_stats()`` work with any backend.  It forwards measurements to the
backend only when the backend is not :class:`NoopMetrics`, using tag dicts
cached per event type / handler, so a disabled backend costs one lock and a few
dict updates per call and no string formatting.

Metric names (``prefix`` defaults to ``event_bus``; the 1.x names are kept)::

    counters   {p}_events_emitted_total      {event_type}       events published
               {p}_events_dropped_total      {event_type}       dropped by backpressure
               {p}_events_failed_total       {event_type}       >= 1 handler failed
               {p}_handler_executions_total  {event_type, handler_name, status}
               {p}_handler_errors_total      {event_type, handler_name}
               {p}_handler_timeouts_total    {event_type, handler_name}
               {p}_handler_retries_total     {event_type, handler_name}
               {p}_redactions_total          {redaction_type}
    timings    {p}_handler_latency_ms        {event_type, handler_name, status}
               {p}_emit_latency_ms           {event_type}
    gauges     {p}_pending_events   accepted but unfinished events (queued + in flight)
               {p}_queue_depth      events waiting in queues
               {p}_in_flight        events being dispatched right now
               {p}_dlq_size         entries in the dead letter queue
               {p}_subscriptions    active subscriptions

``status`` is ``success``, ``error`` or ``timeout``.  Label sets are fixed per
metric; event ids, correlation ids and sources are never labels.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from .metrics import InMemoryMetrics, MetricsBackend, NoopMetrics

__all__ = ["MetricsCollector"]

_MAX_CACHED_TAGS: Final = 10_000
_DEFAULT_LATENCY_SAMPLES: Final = 100
_DEFAULT_GAUGE_INTERVAL: Final = 0.01
_monotonic = time.monotonic


class _HandlerStats:
    """Exact per-handler figures for ``get_snapshot()``; latencies are bounded."""

    __slots__ = (
        "failure_count",
        "latencies",
        "max_seconds",
        "min_seconds",
        "retry_count",
        "success_count",
        "timeout_count",
        "total_calls",
        "total_seconds",
    )

    def __init__(self, samples: int) -> None:
        self.total_calls = 0
        self.success_count = 0
        self.failure_count = 0
        self.timeout_count = 0
        self.retry_count = 0
        self.total_seconds = 0.0
        self.min_seconds = float("inf")
        self.max_seconds = 0.0
        self.latencies: deque[float] = deque(maxlen=samples)

    def add_call(self, seconds: float) -> None:
        self.total_calls += 1
        self.total_seconds += seconds
        if seconds < self.min_seconds:
            self.min_seconds = seconds
        if seconds > self.max_seconds:
            self.max_seconds = seconds
        self.latencies.append(seconds)

    def as_dict(self) -> dict[str, Any]:
        calls = self.total_calls
        return {
            "total_calls": calls,
            "success_count": self.success_count,
            "failure_count": self.failure_count,
            "timeout_count": self.timeout_count,
            "retry_count": self.retry_count,
            "total_duration_seconds": self.total_seconds,
            "avg_duration_seconds": self.total_seconds / calls if calls else 0.0,
            "min_duration_seconds": self.min_seconds if calls else 0.0,
            "max_duration_seconds": self.max_seconds,
            "latencies": list(self.latencies),
        }


class _HandlerTags:
    """Pre-built tag dicts for one (event type, handler) pair.

    ``keys`` holds the :class:`InMemoryMetrics` series names, built on first use
    when that is the backend (dropped whenever the backend changes)."""

    __slots__ = ("base", "error", "keys", "success", "timeout")

    def __init__(self, event_type: str, handler_name: str) -> None:
        self.base = {"event_type": event_type, "handler_name": handler_name}
        self.success = {**self.base, "status": "success"}
        self.error = {**self.base, "status": "error"}
        self.timeout = {**self.base, "status": "timeout"}
        self.keys: _HandlerKeys | None = None


class _HandlerKeys:
    """InMemoryMetrics series names for one (event type, handler) pair."""

    __slots__ = (
        "errors",
        "exec_error",
        "exec_success",
        "exec_timeout",
        "latency_error",
        "latency_success",
        "latency_timeout",
        "retries",
        "timeouts",
    )

    def __init__(
        self, collector: MetricsCollector, mem: InMemoryMetrics, tags: _HandlerTags
    ) -> None:
        key = mem._key
        c = collector
        self.exec_success = key(c._n_exec, tags.success)
        self.exec_error = key(c._n_exec, tags.error)
        self.exec_timeout = key(c._n_exec, tags.timeout)
        self.latency_success = key(c._n_handler_latency, tags.success)
        self.latency_error = key(c._n_handler_latency, tags.error)
        self.latency_timeout = key(c._n_handler_latency, tags.timeout)
        self.errors = key(c._n_errors, tags.base)
        self.timeouts = key(c._n_timeouts, tags.base)
        self.retries = key(c._n_retries, tags.base)


class MetricsCollector:
    """Records event-bus metrics on a backend and keeps a live snapshot.

    ``backend`` defaults to :class:`NoopMetrics`; ``prefix`` is joined to every
    metric name with ``_``.  All methods are thread-safe.

    The exact in-process figures (``get_snapshot()``) are always current.  The
    pending-events gauge, set on every publish, is forwarded to the backend
    only when its value changed and at most once per ``gauge_interval``
    seconds (default 10 ms); a value held back is forwarded by the next update
    after the interval, by :meth:`get_snapshot` (so ``bus.get_stats()``) and by
    :meth:`flush_gauges`.  ``gauge_interval=0`` forwards every change.  The
    other gauges are forwarded on every update.
    """

    EVENTS_EMITTED: Final = "events_emitted_total"
    EVENTS_DROPPED: Final = "events_dropped_total"
    EVENTS_FAILED: Final = "events_failed_total"
    HANDLER_EXECUTIONS: Final = "handler_executions_total"
    HANDLER_ERRORS: Final = "handler_errors_total"
    HANDLER_TIMEOUTS: Final = "handler_timeouts_total"
    HANDLER_RETRIES: Final = "handler_retries_total"
    REDACTIONS: Final = "redactions_total"
    EMIT_LATENCY: Final = "emit_latency_ms"
    HANDLER_LATENCY: Final = "handler_latency_ms"
    PENDING_EVENTS: Final = "pending_events"
    QUEUE_DEPTH: Final = "queue_depth"
    IN_FLIGHT: Final = "in_flight"
    DLQ_SIZE: Final = "dlq_size"
    SUBSCRIPTIONS: Final = "subscriptions"

    def __init__(
        self,
        backend: MetricsBackend | None = None,
        prefix: str = "event_bus",
        *,
        latency_samples: int = _DEFAULT_LATENCY_SAMPLES,
        gauge_interval: float = _DEFAULT_GAUGE_INTERVAL,
    ) -> None:
        self.prefix = prefix
        self.gauge_interval = gauge_interval
        self._pending_sent: float | None = None  # last pending count forwarded
        self._pending_next = 0.0  # monotonic time from which the next may go
        self._latency_samples = latency_samples
        self._lock = threading.Lock()
        n = self._name
        self._n_emitted = n(self.EVENTS_EMITTED)
        self._n_dropped = n(self.EVENTS_DROPPED)
        self._n_failed = n(self.EVENTS_FAILED)
        self._n_exec = n(self.HANDLER_EXECUTIONS)
        self._n_errors = n(self.HANDLER_ERRORS)
        self._n_timeouts = n(self.HANDLER_TIMEOUTS)
        self._n_retries = n(self.HANDLER_RETRIES)
        self._n_redactions = n(self.REDACTIONS)
        self._n_emit_latency = n(self.EMIT_LATENCY)
        self._n_handler_latency = n(self.HANDLER_LATENCY)
        self._n_pending = n(self.PENDING_EVENTS)
        self._n_queue = n(self.QUEUE_DEPTH)
        self._n_in_flight = n(self.IN_FLIGHT)
        self._n_dlq = n(self.DLQ_SIZE)
        self._n_subs = n(self.SUBSCRIPTIONS)
        self._type_tags: dict[str, dict[str, str]] = {}
        self._emitted_keys: dict[str, str] = {}
        self._handler_tags: dict[tuple[str, str], _HandlerTags] = {}
        self._redaction_tags: dict[str, dict[str, str]] = {}
        self._emitted: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._redactions: dict[str, int] = {}
        self._handlers: dict[str, _HandlerStats] = {}
        self._gauges: dict[str, float] = {
            "pending_events": 0,
            "queue_depth": 0,
            "in_flight": 0,
            "dlq_size": 0,
            "subscriptions": 0,
        }
        self._backend: MetricsBackend = NoopMetrics()
        self._active = False
        self._watchers: list[weakref.WeakMethod[Callable[[], None]]] = []
        self._mem: InMemoryMetrics | None = None
        self.backend = backend if backend is not None else NoopMetrics()

    # -- configuration ----------------------------------------------------

    @property
    def backend(self) -> MetricsBackend:
        return self._backend

    @backend.setter
    def backend(self, backend: MetricsBackend) -> None:
        self._backend = backend
        self._active = type(backend) is not NoopMetrics and not backend.records_nothing
        # exact InMemoryMetrics (not a subclass, which may override the public
        # methods): record with pre-built series names
        self._mem = backend if type(backend) is InMemoryMetrics else None
        self._emitted_keys = {}
        for tags in list(self._handler_tags.values()):
            tags.keys = None
        self._pending_sent = None
        self._pending_next = 0.0

        for watcher in list(self._watchers):
            notify = watcher()
            if notify is None:
                self._watchers.remove(watcher)
            else:
                notify()

    def watch(self, on_backend_change: Callable[[], None]) -> None:
        """Call the bound method ``on_backend_change`` after each ``backend`` change
        (held weakly: a bus that goes away is forgotten)."""
        self._watchers.append(weakref.WeakMethod(on_backend_change))

    @property
    def enabled(self) -> bool:
        """True when measurements are forwarded (the backend records something)."""
        return self._active

    def _name(self, metric: str) -> str:
        return f"{self.prefix}_{metric}" if self.prefix else metric

    # -- tag caches ---------------------------------------------------------

    def _tags_for_type(self, event_type: str) -> dict[str, str]:
        tags = self._type_tags.get(event_type)
        if tags is None:
            tags = {"event_type": event_type}
            if len(self._type_tags) < _MAX_CACHED_TAGS:
                self._type_tags[event_type] = tags
        return tags

    def _tags_for_handler(self, event_type: str, handler_name: str) -> _HandlerTags:
        key = (event_type, handler_name)
        tags = self._handler_tags.get(key)
        if tags is None:
            tags = _HandlerTags(event_type, handler_name)
            if len(self._handler_tags) < _MAX_CACHED_TAGS:
                self._handler_tags[key] = tags
        return tags

    def _handler_keys(
        self, mem: InMemoryMetrics, event_type: str, handler_name: str
    ) -> _HandlerKeys:
        tags = self._tags_for_handler(event_type, handler_name)
        keys = tags.keys
        if keys is None:
            keys = tags.keys = _HandlerKeys(self, mem, tags)
        return keys

    def _handler(self, handler_name: str) -> _HandlerStats:
        stats = self._handlers.get(handler_name)
        if stats is None:
            stats = self._handlers[handler_name] = _HandlerStats(self._latency_samples)
        return stats

    # -- events -----------------------------------------------------------

    def record_event_emitted(
        self,
        event_type: str,
        latency_seconds: float | None = None,
        source: str | None = None,
    ) -> None:
        """One event was accepted for delivery (published).

        ``latency_seconds`` (time spent in ``publish``) feeds the emit latency
        timing when given.  ``source`` is accepted for 1.x compatibility and is
        not used as a label (label sets are fixed and low-cardinality).
        """
        with self._lock:
            emitted = self._emitted
            emitted[event_type] = emitted.get(event_type, 0) + 1
        mem = self._mem
        if mem is not None and latency_seconds is None:
            key = self._emitted_keys.get(event_type)
            if key is None:
                key = mem._key(self._n_emitted, self._tags_for_type(event_type))
                if len(self._emitted_keys) < _MAX_CACHED_TAGS:
                    self._emitted_keys[event_type] = key
            mem._count_keyed(key, 1)
        elif self._active:
            tags = self._tags_for_type(event_type)
            self._backend.increment(self._n_emitted, 1, tags)
            if latency_seconds is not None:
                self._backend.timing(self._n_emit_latency, latency_seconds * 1000.0, tags)

    record_event_published = record_event_emitted

    def record_event_dropped(
        self, event_type: str, source: str | None = None, reason: str | None = None
    ) -> None:
        """One event was dropped (backpressure DROP / DROP_OLDEST, shutdown).

        ``source`` and ``reason`` are accepted for the caller's convenience and
        are not labels.
        """
        with self._lock:
            self._dropped[event_type] = self._dropped.get(event_type, 0) + 1
        if self._active:
            self._backend.increment(self._n_dropped, 1, self._tags_for_type(event_type))

    def record_event_failed(self, event_type: str) -> None:
        """Delivery of one event finished with at least one failed handler."""
        with self._lock:
            self._failed[event_type] = self._failed.get(event_type, 0) + 1
        if self._active:
            self._backend.increment(self._n_failed, 1, self._tags_for_type(event_type))

    def record_emit(
        self,
        event_type: str,
        source: str | None = None,
        latency_ms: float | None = None,
        dropped: bool = False,
    ) -> None:
        """1.x combined form: an emitted (or, with ``dropped=True``, dropped) event."""
        if dropped:
            self.record_event_dropped(event_type, source)
        else:
            self.record_event_emitted(
                event_type, None if latency_ms is None else latency_ms / 1000.0, source
            )

    # -- handlers ---------------------------------------------------------

    def record_handler_execution(
        self,
        event_type: str,
        handler_name: str,
        duration_seconds: float,
        success: bool = True,
    ) -> None:
        """One handler call finished (successfully or with an exception)."""
        with self._lock:
            stats = self._handler(handler_name)
            stats.add_call(duration_seconds)
            if success:
                stats.success_count += 1
            else:
                stats.failure_count += 1
        mem = self._mem
        if mem is not None:
            keys = self._handler_keys(mem, event_type, handler_name)
            if success:
                mem._call_keyed(keys.exec_success, keys.latency_success, duration_seconds * 1000.0)
            else:
                mem._call_keyed(keys.exec_error, keys.latency_error, duration_seconds * 1000.0)
                mem._count_keyed(keys.errors, 1)
        elif self._active:
            tags = self._tags_for_handler(event_type, handler_name)
            status_tags = tags.success if success else tags.error
            backend = self._backend
            backend.increment(self._n_exec, 1, status_tags)
            backend.timing(self._n_handler_latency, duration_seconds * 1000.0, status_tags)
            if not success:
                backend.increment(self._n_errors, 1, tags.base)

    def record_handler_timeout(
        self, event_type: str, handler_name: str, duration_seconds: float
    ) -> None:
        """One handler call exceeded its timeout (cancelled or abandoned).

        Counts as a failed call as well; do not also call
        :meth:`record_handler_execution` for the same call.
        """
        with self._lock:
            stats = self._handler(handler_name)
            stats.add_call(duration_seconds)
            stats.failure_count += 1
            stats.timeout_count += 1
        mem = self._mem
        if mem is not None:
            keys = self._handler_keys(mem, event_type, handler_name)
            mem._call_keyed(keys.exec_timeout, keys.latency_timeout, duration_seconds * 1000.0)
            mem._count_keyed(keys.timeouts, 1)
        elif self._active:
            tags = self._tags_for_handler(event_type, handler_name)
            backend = self._backend
            backend.increment(self._n_exec, 1, tags.timeout)
            backend.timing(self._n_handler_latency, duration_seconds * 1000.0, tags.timeout)
            backend.increment(self._n_timeouts, 1, tags.base)

    def record_handler_retry(self, event_type: str, handler_name: str) -> None:
        """A failed handler call is about to be retried."""
        with self._lock:
            self._handler(handler_name).retry_count += 1
        mem = self._mem
        if mem is not None:
            mem._count_keyed(self._handler_keys(mem, event_type, handler_name).retries, 1)
        elif self._active:
            tags = self._tags_for_handler(event_type, handler_name)
            self._backend.increment(self._n_retries, 1, tags.base)

    # -- redaction --------------------------------------------------------

    def record_redactions(self, counts: Mapping[str, int]) -> None:
        """Add redaction counts by detector type (e.g. ``{"email": 2, "phone": 1}``)."""
        if not counts:
            return
        with self._lock:
            for kind, n in counts.items():
                self._redactions[kind] = self._redactions.get(kind, 0) + n
        if self._active:
            for kind, n in counts.items():
                if n <= 0:
                    continue
                tags = self._redaction_tags.get(kind)
                if tags is None:
                    tags = {"redaction_type": kind}
                    if len(self._redaction_tags) < _MAX_CACHED_TAGS:
                        self._redaction_tags[kind] = tags
                self._backend.increment(self._n_redactions, n, tags)

    # -- gauges -----------------------------------------------------------

    def _set_gauge(self, key: str, name: str, value: float) -> None:
        self._gauges[key] = value
        if self._active:
            self._backend.gauge(name, float(value))

    def update_pending_count(self, count: int) -> None:
        """Accepted-but-unfinished events (the backpressure figure).

        Called on every publish, so it is rate limited towards the backend (see
        the class docstring); the snapshot value is always exact.
        """
        self._gauges["pending_events"] = count
        if self._active and count != self._pending_sent:
            now = _monotonic()
            if now >= self._pending_next:
                self._pending_next = now + self.gauge_interval
                self._pending_sent = count
                self._backend.gauge(self._n_pending, float(count))

    def flush_gauges(self) -> None:
        """Forward a pending-events value held back by the rate limit, if any."""
        if self._active:
            count = self._gauges["pending_events"]
            if count != self._pending_sent:
                self._pending_sent = count
                self._pending_next = _monotonic() + self.gauge_interval
                self._backend.gauge(self._n_pending, float(count))

    def update_queue_depth(self, depth: int) -> None:
        """Events waiting in the bus's queues (not yet dispatched)."""
        self._set_gauge("queue_depth", self._n_queue, depth)

    def update_in_flight(self, count: int) -> None:
        """Events whose handlers are running right now."""
        self._set_gauge("in_flight", self._n_in_flight, count)

    def update_dlq_size(self, size: int) -> None:
        """Entries currently in the dead letter queue."""
        self._set_gauge("dlq_size", self._n_dlq, size)

    def update_subscription_count(self, count: int) -> None:
        """Active subscriptions."""
        self._set_gauge("subscriptions", self._n_subs, count)

    # -- reading ----------------------------------------------------------

    def get_snapshot(self) -> dict[str, Any]:
        """Exact figures since creation (or :meth:`reset`), whatever the backend.

        Keys: ``events_emitted`` / ``events_dropped`` / ``events_failed``
        ({event_type: count}), ``total_events_emitted`` / ``total_events_dropped``
        / ``total_events_failed``, ``handler_stats`` ({handler_name:
        {total_calls, success_count, failure_count, timeout_count, retry_count,
        total/avg/min/max_duration_seconds, latencies (the last
        ``latency_samples`` durations, seconds)}}), ``redactions``
        ({type: count}), ``total_redactions``, the gauges ``pending_events``,
        ``queue_depth``, ``in_flight``, ``dlq_size``, ``subscriptions``, and
        ``backend`` (class name).
        """
        self.flush_gauges()
        with self._lock:
            emitted = dict(self._emitted)
            dropped = dict(self._dropped)
            failed = dict(self._failed)
            redactions = dict(self._redactions)
            handlers = {name: s.as_dict() for name, s in self._handlers.items()}
            gauges = dict(self._gauges)
        return {
            "events_emitted": emitted,
            "events_dropped": dropped,
            "events_failed": failed,
            "total_events_emitted": sum(emitted.values()),
            "total_events_dropped": sum(dropped.values()),
            "total_events_failed": sum(failed.values()),
            "handler_stats": handlers,
            "redactions": redactions,
            "total_redactions": sum(redactions.values()),
            **gauges,
            "backend": type(self._backend).__name__,
        }

    def reset(self) -> None:
        """Forget the in-process statistics (the backend is not touched)."""
        with self._lock:
            self._emitted.clear()
            self._dropped.clear()
            self._failed.clear()
            self._redactions.clear()
            self._handlers.clear()
            for key in self._gauges:
                self._gauges[key] = 0
