"""1.x import path for tracing helpers: ``from aperion_event_bus.telemetry import traced``.

Thin re-export of :mod:`aperion_event_bus.observability.tracing`; every function
is a no-op without OpenTelemetry.  ``OTEL_AVAILABLE`` (1.x constant) is computed
on first access so importing this module does not look for OpenTelemetry.
"""

from __future__ import annotations

from .observability.event_tracer import EventTracer
from .observability.tracing import (
    add_event_to_span,
    extract_trace_context_from_headers,
    get_current_span,
    get_trace_correlation_id,
    get_tracer,
    inject_trace_context_to_headers,
    is_otel_available,
    set_span_attribute,
    traced,
)

__all__ = [
    "EventTracer",
    "add_event_to_span",
    "extract_trace_context_from_headers",
    "get_current_span",
    "get_trace_correlation_id",
    "get_tracer",
    "inject_trace_context_to_headers",
    "is_otel_available",
    "set_span_attribute",
    "traced",
]


def __getattr__(name: str) -> bool:
    if name == "OTEL_AVAILABLE":
        return is_otel_available()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
