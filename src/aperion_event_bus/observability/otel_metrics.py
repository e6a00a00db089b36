"""OTelMetrics: a MetricsBackend that records through the OpenTelemetry metrics API.

Instruments are created lazily, once per metric name, on a meter named
``aperion_event_bus`` from the given ``MeterProvider`` (the global one by
default, so the SDK's readers/exporters configured by the application apply).
Mapping from the backend interface:

* ``increment`` -> Counter (a trailing ``_total`` is dropped from the name, the
  OTel Prometheus exporter adds it back);
* ``gauge`` -> synchronous Gauge;
* ``histogram`` -> Histogram;
* ``timing(name, ms)`` -> Histogram ``name`` without ``_ms``, unit ``s``,
  recording seconds (the OTel convention for durations).

Tags become attributes, filtered like the Prometheus labels (allowed names
only, never ids).  ``opentelemetry`` is imported when the backend is created.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from ._optional import require
from .metrics import DEFAULT_ALLOWED_LABELS, MetricsBackend, Tags, filter_labels

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

__all__ = ["OTelMetrics"]

METER_NAME: Final = "aperion_event_bus"
_MAX_CACHED: Final = 10_000


class OTelMetrics(MetricsBackend):
    """Records measurements with OpenTelemetry instruments.

    Args:
        meter_provider: an ``opentelemetry.metrics.MeterProvider``; the global
            provider when omitted.
        allowed_labels: tag names recorded as attributes; ``None`` allows every
            name except the high-cardinality ones.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        allowed_labels: Iterable[str] | None = DEFAULT_ALLOWED_LABELS,
    ) -> None:
        otel_metrics = require("opentelemetry.metrics", "OTelMetrics", "otel")
        if meter_provider is None:
            self._meter = otel_metrics.get_meter(METER_NAME)
        else:
            self._meter = meter_provider.get_meter(METER_NAME)
        # an explicit no-op meter (NoOpMeterProvider) records nothing; the global proxy
        # meter may start recording once an SDK provider is set, so it counts as live
        self._noop = isinstance(self._meter, otel_metrics.NoOpMeter)
        self._allowed = frozenset(allowed_labels) if allowed_labels is not None else None
        self._instruments: dict[tuple[str, str], Any] = {}
        self._attributes: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        self._lock = threading.Lock()

    @property
    def records_nothing(self) -> bool:
        return self._noop

    def increment(self, name: str, value: int = 1, tags: Tags = None) -> None:
        if value < 0:
            return
        self._instrument("counter", name).add(value, self._attrs(tags))

    def gauge(self, name: str, value: float, tags: Tags = None) -> None:
        self._instrument("gauge", name).set(value, self._attrs(tags))

    def histogram(self, name: str, value: float, tags: Tags = None) -> None:
        self._instrument("histogram", name).record(value, self._attrs(tags))

    def timing(self, name: str, value_ms: float, tags: Tags = None) -> None:
        self._instrument("timing", name).record(value_ms / 1000.0, self._attrs(tags))

    def _attrs(self, tags: Tags) -> dict[str, str] | None:
        if not tags:
            return None
        key = tuple(tags.items())
        attrs = self._attributes.get(key)
        if attrs is None:
            attrs = dict(filter_labels(tags, self._allowed))
            if len(self._attributes) < _MAX_CACHED:
                self._attributes[key] = attrs
        return attrs

    def _instrument(self, kind: str, name: str) -> Any:
        instrument = self._instruments.get((kind, name))
        if instrument is not None:
            return instrument
        with self._lock:
            instrument = self._instruments.get((kind, name))
            if instrument is None:
                meter = self._meter
                if kind == "counter":
                    instrument = meter.create_counter(name.removesuffix("_total"))
                elif kind == "gauge":
                    instrument = meter.create_gauge(name)
                elif kind == "histogram":
                    instrument = meter.create_histogram(name)
                else:
                    instrument = meter.create_histogram(
                        name.removesuffix("_ms"), unit="s", description="duration in seconds"
                    )
                self._instruments[(kind, name)] = instrument
        return instrument
