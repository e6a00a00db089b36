"""PrometheusMetrics: a MetricsBackend that exports through prometheus_client.

Why it looks the way it does:

* Several buses in one process must not collide.  Each backend uses its own
  ``CollectorRegistry`` unless one is passed in; backends sharing a registry
  share the metric objects (created once per registry), and ``bus="name"``
  adds a constant ``bus`` label so their series stay apart.
* Label sets are fixed: a metric's label names are decided when it is first
  used.  Later measurements with other tags are mapped onto those names
  (missing ones become ``""``, extra ones are dropped), so a stray tag can never
  raise or create a new metric.  Only ``allowed_labels`` are exported and
  :data:`HIGH_CARDINALITY_LABELS` (event ids, correlation ids, ...) never are.
* Durations are exported in seconds (Prometheus base unit): ``timing(name, ms)``
  observes ``ms / 1000`` on a histogram named ``name`` with a trailing ``_ms``
  replaced by ``_seconds``.

``prometheus_client`` is imported when the first ``PrometheusMetrics`` is created.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from .._wiring import library_logger
from ._optional import require
from .metrics import DEFAULT_ALLOWED_LABELS, MetricsBackend, Tags, filter_labels

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["PrometheusMetrics"]

_log = library_logger("aperion_event_bus.observability.prometheus")

_MAX_CHILDREN: Final = 10_000
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")

_DESCRIPTIONS: Final = {
    "events_emitted": "Events published (accepted for delivery), by event type.",
    "events_dropped": "Events dropped by backpressure or shutdown, by event type.",
    "events_failed": "Events with at least one failed handler, by event type.",
    "handler_executions": "Handler calls by handler and status (success/error/timeout).",
    "handler_errors": "Handler calls that raised, by handler.",
    "handler_timeouts": "Handler calls that exceeded their timeout, by handler.",
    "handler_retries": "Handler call retries, by handler.",
    "redactions": "Values redacted from output, by detector type.",
    "handler_latency_seconds": "Handler call duration in seconds.",
    "emit_latency_seconds": "Time spent in publish, in seconds.",
    "pending_events": "Accepted but unfinished events (queued + in flight).",
    "queue_depth": "Events waiting in the bus's queues.",
    "in_flight": "Events being dispatched right now.",
    "dlq_size": "Entries in the dead letter queue.",
    "subscriptions": "Active subscriptions.",
}


class _NullChild:
    """Stands in for a metric that could not be created (name clash); records nothing."""

    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


class _Family:
    """One prometheus_client metric and its fixed label names."""

    __slots__ = ("kind", "labelnames", "metric")

    def __init__(self, kind: str, metric: Any, labelnames: tuple[str, ...]) -> None:
        self.kind = kind
        self.metric = metric
        self.labelnames = labelnames


# registry -> {exported name: family}; shared by every backend using that registry.
_families: weakref.WeakKeyDictionary[Any, dict[str, _Family]] = weakref.WeakKeyDictionary()
_families_lock = threading.Lock()


def _sanitize(name: str) -> str:
    name = _INVALID_NAME_CHARS.sub("_", name)
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def _exported_name(kind: str, name: str) -> str:
    name = _sanitize(name)
    if kind == "timing":
        name = name.removesuffix("_ms") + "_seconds"
    return name


def _describe(name: str) -> str:
    base = name.removesuffix("_total")
    for key, text in _DESCRIPTIONS.items():
        if base.endswith(key):
            return text
    return f"{name} (aperion_event_bus)"


class PrometheusMetrics(MetricsBackend):
    """Exports measurements as Prometheus metrics.

    Args:
        registry: the ``prometheus_client.CollectorRegistry`` to register in;
            a new private registry by default (so two buses never clash).
            Pass ``prometheus_client.REGISTRY`` to use the process default.
        bus: value of a constant ``bus`` label added to every series; set it
            when several buses share one registry.
        buckets: histogram buckets (seconds for timings); prometheus_client's
            defaults otherwise.
        allowed_labels: tag names exported as labels; ``None`` allows every
            name except the high-cardinality ones.

    Read the exposition text with :meth:`exposition` (serve it from your
    ``/metrics`` endpoint with :attr:`content_type`).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        bus: str | None = None,
        buckets: Sequence[float] | None = None,
        allowed_labels: Iterable[str] | None = DEFAULT_ALLOWED_LABELS,
    ) -> None:
        self._pc = require("prometheus_client", "PrometheusMetrics", "prometheus")
        self.registry: CollectorRegistry = (
            registry if registry is not None else self._pc.CollectorRegistry()
        )
        self.bus = bus
        self._buckets = tuple(buckets) if buckets is not None else None
        self._allowed = frozenset(allowed_labels) if allowed_labels is not None else None
        self._children: dict[tuple[str, str, tuple[tuple[str, str], ...]], Any] = {}
        self._lock = threading.Lock()
        with _families_lock:
            self._families = _families.setdefault(self.registry, {})

    # -- MetricsBackend ---------------------------------------------------

    def increment(self, name: str, value: int = 1, tags: Tags = None) -> None:
        if value < 0:
            return  # counters only go up; ignore rather than raise in the hot path
        self._child("counter", name, tags).inc(value)

    def gauge(self, name: str, value: float, tags: Tags = None) -> None:
        self._child("gauge", name, tags).set(value)

    def histogram(self, name: str, value: float, tags: Tags = None) -> None:
        self._child("histogram", name, tags).observe(value)

    def timing(self, name: str, value_ms: float, tags: Tags = None) -> None:
        self._child("timing", name, tags).observe(value_ms / 1000.0)

    # -- exposition -------------------------------------------------------

    def exposition(self) -> str:
        """The registry in the Prometheus text format (what ``/metrics`` serves)."""
        data: bytes = self._pc.generate_latest(self.registry)
        return data.decode("utf-8")

    @property
    def content_type(self) -> str:
        """HTTP Content-Type of :meth:`exposition`."""
        value: str = self._pc.CONTENT_TYPE_LATEST
        return value

    # -- internals --------------------------------------------------------

    def _child(self, kind: str, name: str, tags: Tags) -> Any:
        key = (kind, name, tuple(tags.items()) if tags else ())
        child = self._children.get(key)
        if child is None:
            child = self._make_child(kind, name, tags)
            if len(self._children) < _MAX_CHILDREN:
                self._children[key] = child
        return child

    def _make_child(self, kind: str, name: str, tags: Tags) -> Any:
        labels = dict(filter_labels(tags, self._allowed))
        if self.bus is not None:
            labels["bus"] = self.bus
        family = self._family(kind, name, tuple(sorted(labels)))
        if family is None:
            return _NullChild()
        if not family.labelnames:
            return family.metric
        return family.metric.labels(*(labels.get(n, "") for n in family.labelnames))

    def _family(self, kind: str, name: str, labelnames: tuple[str, ...]) -> _Family | None:
        exported = _exported_name(kind, name)
        with _families_lock:
            family = self._families.get(exported)
            if family is None:
                family = self._create(kind, exported, labelnames)
                if family is None:
                    return None
                self._families[exported] = family
        if family.kind != kind:
            _log.warning(
                "metric %r is already a %s; %s measurements for it are ignored",
                exported,
                family.kind,
                kind,
            )
            return None
        if family.labelnames != labelnames:
            _log.debug(
                "metric %r has fixed labels %s; mapping %s onto them",
                exported,
                family.labelnames,
                labelnames,
            )
        return family

    def _create(self, kind: str, exported: str, labelnames: tuple[str, ...]) -> _Family | None:
        pc = self._pc
        doc = _describe(exported)
        try:
            metric: Any
            if kind == "counter":
                metric = pc.Counter(exported, doc, labelnames, registry=self.registry)
            elif kind == "gauge":
                metric = pc.Gauge(exported, doc, labelnames, registry=self.registry)
            elif self._buckets is not None:
                metric = pc.Histogram(
                    exported, doc, labelnames, registry=self.registry, buckets=self._buckets
                )
            else:
                metric = pc.Histogram(exported, doc, labelnames, registry=self.registry)
        except ValueError as exc:  # name already registered by someone else
            _log.warning("cannot export metric %r: %s", exported, exc)
            return None
        return _Family(kind, metric, labelnames)
