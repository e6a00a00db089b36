"""Metrics backends: the 1.x ``MetricsBackend`` interface and the in-process backends.

A backend receives four kinds of measurement - counters (``increment``), gauges
(``gauge``), distributions (``histogram``) and durations in milliseconds
(``timing``) - each with a metric name and optional ``tags`` (label name ->
value).  :class:`~aperion_event_bus.observability.collector.MetricsCollector`
turns bus activity into these calls; backends decide where the numbers go.

This module has no optional dependencies.  The Prometheus and OpenTelemetry
backends live in ``prometheus.py`` and ``otel_metrics.py`` and import their
library only when instantiated.

Tags passed to a backend are shared, read-only mappings (the collector caches
them to keep the per-event cost low): backends must not mutate them.
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from .._wiring import library_logger

__all__ = [
    "DEFAULT_ALLOWED_LABELS",
    "DEFAULT_MAX_SAMPLES",
    "DEFAULT_MAX_SERIES",
    "HIGH_CARDINALITY_LABELS",
    "CallbackMetrics",
    "InMemoryMetrics",
    "MetricsBackend",
    "NoopMetrics",
    "SampleSummary",
    "Tags",
    "TimingContext",
]

_log = library_logger("aperion_event_bus.observability.metrics")

Tags = dict[str, str] | None
"""Optional label set of one measurement (label name -> value)."""

DEFAULT_MAX_SAMPLES: Final = 1024
"""Samples kept per histogram/timing series by :class:`InMemoryMetrics`."""

DEFAULT_MAX_SERIES: Final = 10_000
"""Distinct series (name + tags) kept by :class:`InMemoryMetrics`."""

DEFAULT_ALLOWED_LABELS: Final = frozenset(
    {
        "event_type",
        "handler_name",
        "status",
        "source",
        "reason",
        "redaction_type",
        "outcome",
        "bus",
    }
)
"""Label names the Prometheus and OpenTelemetry backends export by default.

All of them have a small, bounded set of values.  Other tag names are dropped
unless the backend is created with a different ``allowed_labels``.
"""

HIGH_CARDINALITY_LABELS: Final = frozenset(
    {
        "event_id",
        "id",
        "message_id",
        "correlation_id",
        "causation_id",
        "trace_id",
        "span_id",
        "traceparent",
        "tracestate",
        "request_id",
        "user_id",
        "payload",
    }
)
"""Label names that are never exported, whatever ``allowed_labels`` says."""


class MetricsBackend(ABC):
    """Where measurements go.  Subclass and implement the four methods.

    Implementations are called on the publishing thread and on handler threads,
    once or a few times per event: keep them cheap and thread-safe.
    """

    @property
    def records_nothing(self) -> bool:
        """True when this backend is switched off entirely: the bus then feeds neither
        it nor its collector (no per-event cost; the collector's snapshot stays empty),
        as if it had no ``metrics``. ``NoopMetrics`` says False: a collector over it
        still keeps the exact figures of ``get_snapshot()`` (``get_stats()['metrics']``)."""
        return False

    @abstractmethod
    def increment(self, name: str, value: int = 1, tags: Tags = None) -> None:
        """Add ``value`` to the counter ``name``."""

    @abstractmethod
    def gauge(self, name: str, value: float, tags: Tags = None) -> None:
        """Set the gauge ``name`` to ``value``."""

    @abstractmethod
    def histogram(self, name: str, value: float, tags: Tags = None) -> None:
        """Record one observation of the distribution ``name``."""

    @abstractmethod
    def timing(self, name: str, value_ms: float, tags: Tags = None) -> None:
        """Record one duration, in milliseconds."""


class NoopMetrics(MetricsBackend):
    """Discards everything; the default.  The collector skips it entirely."""

    def increment(self, name: str, value: int = 1, tags: Tags = None) -> None:
        pass

    def gauge(self, name: str, value: float, tags: Tags = None) -> None:
        pass

    def histogram(self, name: str, value: float, tags: Tags = None) -> None:
        pass

    def timing(self, name: str, value_ms: float, tags: Tags = None) -> None:
        pass


MetricCallback = Callable[[str, str, float, Tags], None]
"""``callback(metric_type, name, value, tags)``; type is counter/gauge/histogram/timing."""


class CallbackMetrics(MetricsBackend):
    """Forwards every measurement to ``callback(metric_type, name, value, tags)``.

    ``metric_type`` is one of ``"counter"``, ``"gauge"``, ``"histogram"``,
    ``"timing"``.  Handy to bridge to StatsD/Datadog clients or in tests.
    """

    __slots__ = ("callback",)

    def __init__(self, callback: MetricCallback) -> None:
        self.callback = callback

    def increment(self, name: str, value: int = 1, tags: Tags = None) -> None:
        self.callback("counter", name, float(value), tags)

    def gauge(self, name: str, value: float, tags: Tags = None) -> None:
        self.callback("gauge", name, value, tags)

    def histogram(self, name: str, value: float, tags: Tags = None) -> None:
        self.callback("histogram", name, value, tags)

    def timing(self, name: str, value_ms: float, tags: Tags = None) -> None:
        self.callback("timing", name, value_ms, tags)


@dataclass(frozen=True, slots=True)
class SampleSummary:
    """Exact summary of every value recorded for one series (not just the kept samples)."""

    count: int
    total: float
    min: float
    max: float

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class _Distribution:
    """Exact count/sum/min/max plus a uniform reservoir of at most ``cap`` samples.

    The reservoir uses Vitter's algorithm R: the first ``cap`` values are kept;
    afterwards the n-th value replaces a random slot with probability cap/n, so
    the kept samples stay a uniform sample of everything seen.
    """

    __slots__ = ("count", "max", "min", "samples", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.samples: list[float] = []

    def add(self, value: float, cap: int, rng: random.Random) -> None:
        count = self.count = self.count + 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if count <= cap:
            self.samples.append(value)
        else:
            # randrange(count) < cap, with one C call (random() is in [0, 1))
            slot = int(rng.random() * count)
            if slot < cap:
                self.samples[slot] = value

    def summary(self) -> SampleSummary:
        if not self.count:
            return SampleSummary(0, 0.0, 0.0, 0.0)
        return SampleSummary(self.count, self.total, self.min, self.max)


class InMemoryMetrics(MetricsBackend):
    """Keeps metrics in process memory, for tests, debugging and ``get_stats()``.

    Series are keyed ``name{k=v,...}`` with tags sorted by name (``name`` alone
    without tags), as in 1.x.

    Memory is bounded: each histogram/timing series keeps an exact
    count/sum/min/max (:meth:`get_histogram_summary`, :meth:`get_timing_summary`)
    plus a uniform random reservoir of at most ``max_samples`` values
    (default 1024) returned by :meth:`get_histogram_values` /
    :meth:`get_timing_values`.  While a series has fewer values than the bound,
    all of them are returned in recording order.  At most ``max_series`` distinct
    series (default 10,000) are kept; measurements for further series are
    dropped and counted in :attr:`dropped_series`.
    """

    def __init__(
        self,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        *,
        max_series: int = DEFAULT_MAX_SERIES,
        seed: int | None = None,
    ) -> None:
        if max_samples < 1 or max_series < 1:
            raise ValueError("max_samples and max_series must be at least 1")
        self.max_samples = max_samples
        self.max_series = max_series
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {}
        self._histograms: dict[str, _Distribution] = {}
        self._timings: dict[str, _Distribution] = {}
        self._keys: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.dropped_series = 0

    # -- keys -------------------------------------------------------------

    def _key(self, name: str, tags: Tags) -> str:
        if not tags:
            return name
        items = tuple(tags.items())
        cache_key = (name, items)
        key = self._keys.get(cache_key)
        if key is None:
            key = name + "{" + ",".join(f"{k}={v}" for k, v in sorted(items)) + "}"
            if len(self._keys) < self.max_series:
                self._keys[cache_key] = key
        return key

    def _room_for(self, key: str, table: dict[str, Any]) -> bool:
        if key in table or self._series_count() < self.max_series:
            return True
        self.dropped_series += 1
        if self.dropped_series == 1:
            _log.warning(
                "InMemoryMetrics keeps at most %d series; dropping new series "
                "(tags with too many distinct values?)",
                self.max_series,
            )
        return False

    def _series_count(self) -> int:
        return len(self.counters) + len(self.gauges) + len(self._histograms) + len(self._timings)

    # -- recording --------------------------------------------------------

    def increment(self, name: str, value: int = 1, tags: Tags = None) -> None:
        key = self._key(name, tags)
        with self._lock:
            if self._room_for(key, self.counters):
                self.counters[key] = self.counters.get(key, 0) + value

    def gauge(self, name: str, value: float, tags: Tags = None) -> None:
        key = self._key(name, tags)
        with self._lock:
            if self._room_for(key, self.gauges):
                self.gauges[key] = value

    def histogram(self, name: str, value: float, tags: Tags = None) -> None:
        self._observe(self._histograms, self._key(name, tags), value)

    def timing(self, name: str, value_ms: float, tags: Tags = None) -> None:
        self._observe(self._timings, self._key(name, tags), value_ms)

    def _observe(self, table: dict[str, _Distribution], key: str, value: float) -> None:
        with self._lock:
            dist = table.get(key)
            if dist is None:
                if not self._room_for(key, table):
                    return
                dist = table[key] = _Distribution()
            dist.add(value, self.max_samples, self._rng)

    # -- pre-keyed recording (used by MetricsCollector; keys from _key) ----

    def _count_keyed(self, key: str, value: int) -> None:
        with self._lock:
            counters = self.counters
            if key in counters:
                counters[key] += value
            elif self._room_for(key, counters):
                counters[key] = value

    def _gauge_keyed(self, key: str, value: float) -> None:
        with self._lock:
            gauges = self.gauges
            if key in gauges or self._room_for(key, gauges):
                gauges[key] = value

    def _call_keyed(self, counter_key: str, timing_key: str, value_ms: float) -> None:
        """One counter increment plus one timing observation under one lock."""
        with self._lock:
            counters = self.counters
            if counter_key in counters:
                counters[counter_key] += 1
            elif self._room_for(counter_key, counters):
                counters[counter_key] = 1
            timings = self._timings
            dist = timings.get(timing_key)
            if dist is None:
                if not self._room_for(timing_key, timings):
                    return
                dist = timings[timing_key] = _Distribution()
            dist.add(value_ms, self.max_samples, self._rng)

    # -- reading ----------------------------------------------------------

    def reset(self) -> None:
        """Forget every series."""
        with self._lock:
            self.counters.clear()
            self.gauges.clear()
            self._histograms.clear()
            self._timings.clear()
            self.dropped_series = 0

    def get_counter(self, name: str, tags: Tags = None) -> float:
        """Counter value of one series (0 if never incremented)."""
        return self.counters.get(self._key(name, tags), 0)

    def get_gauge(self, name: str, tags: Tags = None) -> float | None:
        """Last value of one gauge series (None if never set)."""
        return self.gauges.get(self._key(name, tags))

    def get_histogram_values(self, name: str, tags: Tags = None) -> list[float]:
        """Kept samples of one histogram series (at most ``max_samples``)."""
        return self._samples(self._histograms, name, tags)

    def get_timing_values(self, name: str, tags: Tags = None) -> list[float]:
        """Kept durations (ms) of one timing series (at most ``max_samples``)."""
        return self._samples(self._timings, name, tags)

    def get_histogram_summary(self, name: str, tags: Tags = None) -> SampleSummary:
        """Exact count/total/min/max over every value ever recorded for the series."""
        return self._summary(self._histograms, name, tags)

    def get_timing_summary(self, name: str, tags: Tags = None) -> SampleSummary:
        """Exact count/total/min/max (ms) over every duration recorded for the series."""
        return self._summary(self._timings, name, tags)

    def _samples(self, table: dict[str, _Distribution], name: str, tags: Tags) -> list[float]:
        key = self._key(name, tags)
        with self._lock:
            dist = table.get(key)
            return list(dist.samples) if dist is not None else []

    def _summary(self, table: dict[str, _Distribution], name: str, tags: Tags) -> SampleSummary:
        key = self._key(name, tags)
        with self._lock:
            dist = table.get(key)
            return dist.summary() if dist is not None else SampleSummary(0, 0.0, 0.0, 0.0)

    @property
    def histograms(self) -> dict[str, list[float]]:
        """Copy of the kept samples of every histogram series (1.x attribute)."""
        with self._lock:
            return {k: list(d.samples) for k, d in self._histograms.items()}

    @property
    def timings(self) -> dict[str, list[float]]:
        """Copy of the kept samples of every timing series (1.x attribute)."""
        with self._lock:
            return {k: list(d.samples) for k, d in self._timings.items()}

    def snapshot(self) -> dict[str, Any]:
        """Everything as plain data: counters, gauges and histogram/timing summaries."""
        with self._lock:
            return {
                "counters": dict(self.counters),
                "gauges": dict(self.gauges),
                "histograms": {k: d.summary() for k, d in self._histograms.items()},
                "timings": {k: d.summary() for k, d in self._timings.items()},
            }


class TimingContext:
    """``with TimingContext() as t: ...`` then read ``t.elapsed_ms`` (monotonic clock)."""

    __slots__ = ("elapsed_ms", "start_time")

    def __init__(self) -> None:
        self.start_time = 0.0
        self.elapsed_ms = 0.0

    @property
    def elapsed_seconds(self) -> float:
        return self.elapsed_ms / 1000.0

    def __enter__(self) -> TimingContext:
        self.start_time = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.elapsed_ms = (time.perf_counter() - self.start_time) * 1000.0


def filter_labels(tags: Tags, allowed: frozenset[str] | None) -> tuple[tuple[str, str], ...]:
    """Tags an exporting backend may use, as sorted (name, value) pairs.

    Drops :data:`HIGH_CARDINALITY_LABELS` always and names outside ``allowed``
    (unless ``allowed`` is None).  Shared by the Prometheus and OTel backends.
    """
    if not tags:
        return ()
    return tuple(
        sorted(
            (k, v)
            for k, v in tags.items()
            if k not in HIGH_CARDINALITY_LABELS and (allowed is None or k in allowed)
        )
    )
