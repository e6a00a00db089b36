"""1.x import path for metrics: ``from aperion_event_bus.metrics import MetricsCollector``.

Thin re-export of :mod:`aperion_event_bus.observability` (metrics backends and
collector); see docs/observability.md.
"""

from __future__ import annotations

from .observability.collector import MetricsCollector
from .observability.metrics import (
    CallbackMetrics,
    InMemoryMetrics,
    MetricsBackend,
    NoopMetrics,
    SampleSummary,
    TimingContext,
)
from .observability.otel_metrics import OTelMetrics
from .observability.prometheus import PrometheusMetrics

__all__ = [
    "CallbackMetrics",
    "InMemoryMetrics",
    "MetricsBackend",
    "MetricsCollector",
    "NoopMetrics",
    "OTelMetrics",
    "PrometheusMetrics",
    "SampleSummary",
    "TimingContext",
]
