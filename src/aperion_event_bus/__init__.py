"""aperion_event_bus: publish/subscribe for Python services.

Sync and async handlers, wildcard patterns, priorities, awaitable results,
correlation ids and causation on every event, exact backpressure, timeouts,
retries, and the 1.x API. Public names only; see the README for a tour.
"""

from __future__ import annotations

from typing import Any

from ._accel import ACCELERATED
from ._frozen import FrozenDict, FrozenList
from .bus import HANDLER_ERROR_EVENT, EventBus
from .context import (
    CORRELATION_ID_HEADER,
    REQUEST_ID_HEADER,
    CorrelationContext,
    add_correlation_to_log_extra,
    clear_correlation_id,
    current_event,
    extract_correlation_id_from_headers,
    generate_correlation_id,
    get_causation_id,
    get_correlation_id,
    get_headers_with_correlation,
    set_correlation_id,
)
from .dispatch import OverflowPolicy
from .errors import (
    BackpressureError,
    BusClosedError,
    ConfigurationError,
    EventBusError,
    HandlerError,
    HandlerTimeoutError,
    MissingExtraError,
    MissingFieldError,
    PublishFailedError,
    SerializationError,
    ValidationError,
)
from .events import Event
from .results import HandlerResult, PublishResult
from .subscriptions import Subscription
from .typed import event_type
from .validation import (
    EVENT_TYPE_PATTERN,
    EventValidator,
    ValidationResult,
    extract_action,
    extract_domain,
    is_valid_event_type,
)

__all__ = [
    "ACCELERATED",
    "CORRELATION_ID_HEADER",
    "EVENT_TYPE_PATTERN",
    "HANDLER_ERROR_EVENT",
    "REQUEST_ID_HEADER",
    "BackpressureError",
    "BusClosedError",
    "ConfigurationError",
    "CorrelationContext",
    "Event",
    "EventBus",
    "EventBusError",
    "EventValidator",
    "FrozenDict",
    "FrozenList",
    "HandlerError",
    "HandlerResult",
    "HandlerTimeoutError",
    "MissingExtraError",
    "MissingFieldError",
    "OverflowPolicy",
    "PublishFailedError",
    "PublishResult",
    "SerializationError",
    "Subscription",
    "TypedEvent",
    "ValidationError",
    "ValidationResult",
    "__version__",
    "add_correlation_to_log_extra",
    "clear_correlation_id",
    "current_event",
    "event_type",
    "extract_action",
    "extract_correlation_id_from_headers",
    "extract_domain",
    "generate_correlation_id",
    "get_causation_id",
    "get_correlation_id",
    "get_headers_with_correlation",
    "is_valid_event_type",
    "set_correlation_id",
]


# Public names served lazily (first access imports their module), so that
# ``import aperion_event_bus`` stays light: name -> module.
_LAZY = {
    "AuditLogger": ".storage.audit_log",
    "DeadLetterQueue": ".dlq",
    "FailedEvent": ".dlq",
    "FailureReason": ".dlq",
    "Redactor": ".redaction",
    "RedactingFilter": ".redaction",
    "SQLiteStore": ".storage.sqlite",
    "delivery_attempt": ".durable",
    "is_replay": ".durable",
    "IdempotentHandler": ".idempotency",
    "idempotent": ".idempotency",
    "MetricsBackend": ".observability",
    "NoopMetrics": ".observability",
    "CallbackMetrics": ".observability",
    "InMemoryMetrics": ".observability",
    "PrometheusMetrics": ".observability",
    "OTelMetrics": ".observability",
    "MetricsCollector": ".observability",
    "TimingContext": ".observability",
    "EventTracer": ".observability",
    "is_otel_available": ".observability",
    "get_tracer": ".observability",
    "get_current_span": ".observability",
    "get_trace_correlation_id": ".observability",
    "inject_trace_context_to_headers": ".observability",
    "extract_trace_context_from_headers": ".observability",
    "traced": ".observability",
    "add_event_to_span": ".observability",
    "set_span_attribute": ".observability",
}
__all__ += sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Lazy public names (see ``_LAZY``) and TypedEvent (needs the pydantic extra)."""
    if name == "TypedEvent":
        from .typed import _typed_event_base

        return _typed_event_base()
    if name == "__version__":  # importlib.metadata is slow to import: only on demand
        from importlib import metadata

        try:
            version = metadata.version("aperion-event-bus")
        except metadata.PackageNotFoundError:  # pragma: no cover - source tree, not installed
            version = "0.0.0+unknown"
        globals()["__version__"] = version
        return version
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aperion_event_bus' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"TypedEvent"})
