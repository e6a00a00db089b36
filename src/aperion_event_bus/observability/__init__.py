"""Observability for the event bus: metrics, OpenTelemetry tracing, structured logs.

Everything here is optional and cheap when unused.  Importing this package never
imports ``opentelemetry``, ``prometheus_client`` or ``structlog``; they are
imported when a backend/tracer that needs them is created or a function needs
them, and a missing one raises ``MissingExtraError`` (an ``ImportError``) naming
the extra to install (``pip install 'aperion-event-bus[otel]'``,
``[prometheus]``, ``[structlog]``).

Modules: ``metrics`` (backend interface, Noop/Callback/InMemory backends),
``collector`` (MetricsCollector), ``prometheus`` (PrometheusMetrics),
``otel_metrics`` (OTelMetrics), ``tracing`` (1.x telemetry functions, W3C
helpers), ``event_tracer`` (EventTracer, the engine's spans), ``logging``
(logger tree, context filter, JSON formatter, structlog chain).
See docs/observability.md.
"""

from __future__ import annotations

from .collector import MetricsCollector
from .event_tracer import EventTracer, RedactorLike, TracedEvent
from .logging import (
    EventContextFilter,
    JsonFormatter,
    configure_logging,
    event_context,
    get_logger,
    structlog_processors,
)
from .metrics import (
    DEFAULT_ALLOWED_LABELS,
    HIGH_CARDINALITY_LABELS,
    CallbackMetrics,
    InMemoryMetrics,
    MetricsBackend,
    NoopMetrics,
    SampleSummary,
    TimingContext,
)
from .otel_metrics import OTelMetrics
from .prometheus import PrometheusMetrics
from .tracing import (
    add_event_to_span,
    extract_trace_context_from_headers,
    get_current_span,
    get_trace_correlation_id,
    get_tracer,
    inject_trace_context_to_headers,
    is_otel_available,
    parse_traceparent,
    set_span_attribute,
    trace_headers_from,
    trace_id_from_traceparent,
    traced,
)

__all__ = [
    "DEFAULT_ALLOWED_LABELS",
    "HIGH_CARDINALITY_LABELS",
    "CallbackMetrics",
    "EventContextFilter",
    "EventTracer",
    "InMemoryMetrics",
    "JsonFormatter",
    "MetricsBackend",
    "MetricsCollector",
    "NoopMetrics",
    "OTelMetrics",
    "PrometheusMetrics",
    "RedactorLike",
    "SampleSummary",
    "TimingContext",
    "TracedEvent",
    "add_event_to_span",
    "configure_logging",
    "event_context",
    "extract_trace_context_from_headers",
    "get_current_span",
    "get_logger",
    "get_trace_correlation_id",
    "get_tracer",
    "inject_trace_context_to_headers",
    "is_otel_available",
    "parse_traceparent",
    "set_span_attribute",
    "structlog_processors",
    "trace_headers_from",
    "trace_id_from_traceparent",
    "traced",
]
