"""OpenTelemetry helpers (the 1.x ``telemetry`` functions) and W3C trace-context parsing.

Every function works without OpenTelemetry installed and is then a cheap no-op
(returns ``None``, returns its input unchanged, or returns the undecorated
function).  With OpenTelemetry installed, ``opentelemetry`` is imported on
first use, never when this module is imported; helpers that only read the
current span return immediately if nothing imported ``opentelemetry.trace`` yet
(no span can be current then).

The W3C helpers (:func:`parse_traceparent`, :func:`trace_id_from_traceparent`,
:func:`trace_headers_from`) are plain string functions that never need
OpenTelemetry: the bus stores ``traceparent``/``tracestate`` on events as strings.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from ..context import parse_traceparent, trace_id_from_traceparent
from ._optional import is_installed, is_loaded, require

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanKind, Tracer

__all__ = [
    "TRACEPARENT_HEADER",
    "TRACESTATE_HEADER",
    "add_event_to_span",
    "extract_trace_context_from_headers",
    "get_current_span",
    "get_trace_correlation_id",
    "get_tracer",
    "inject_trace_context_to_headers",
    "is_otel_available",
    "parse_traceparent",
    "set_span_attribute",
    "trace_headers_from",
    "trace_id_from_traceparent",
    "traced",
]

TRACEPARENT_HEADER: Final = "traceparent"
TRACESTATE_HEADER: Final = "tracestate"
_TRACE_MODULE: Final = "opentelemetry.trace"


F = TypeVar("F", bound=Callable[..., Any])
H = TypeVar("H", bound=MutableMapping[str, str])


# -- W3C trace context as strings (no OpenTelemetry needed) ----------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        for key, val in headers.items():
            if key.lower() == name:
                return val
    return value


def trace_headers_from(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """Valid ``(traceparent, tracestate)`` from HTTP/message headers (any case), else Nones.

    Use it to make an incoming request's trace the parent of published events:
    pass the pair to ``EventTracer.publish_span(parent_traceparent=...,
    parent_tracestate=...)`` or store it on the event.
    """
    traceparent = _header(headers, TRACEPARENT_HEADER)
    if parse_traceparent(traceparent) is None:
        return None, None
    return cast(str, traceparent).strip(), _header(headers, TRACESTATE_HEADER) or None


# -- 1.x telemetry functions ---------------------------------------------


def is_otel_available() -> bool:
    """Whether the OpenTelemetry API is installed (``pip install 'aperion-event-bus[otel]'``)."""
    return is_installed(_TRACE_MODULE)


def get_tracer(name: str = "event_bus") -> Tracer | None:
    """An OpenTelemetry tracer from the global provider, or None without OpenTelemetry."""
    if not is_otel_available():
        return None
    trace = require(_TRACE_MODULE, "get_tracer", "otel")
    tracer: Tracer = trace.get_tracer(name)
    return tracer


def get_current_span() -> Span | None:
    """The current OpenTelemetry span (possibly a non-recording one), or None without it."""
    if not is_otel_available():
        return None
    trace = require(_TRACE_MODULE, "get_current_span", "otel")
    span: Span = trace.get_current_span()
    return span


def get_trace_correlation_id() -> str | None:
    """The current trace id as 32 lowercase hex digits, or None without a valid span."""
    if not is_loaded(_TRACE_MODULE):
        return None
    span = get_current_span()
    if span is None:
        return None
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def _format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def inject_trace_context_to_headers(headers: H) -> H:
    """Add ``traceparent`` (and ``tracestate``) of the current span to ``headers``.

    Returns the same mapping, unchanged when there is no valid current span or
    no OpenTelemetry.
    """
    if not is_loaded(_TRACE_MODULE):
        return headers
    span = get_current_span()
    if span is None:
        return headers
    ctx = span.get_span_context()
    if ctx.is_valid:
        headers[TRACEPARENT_HEADER] = _format_traceparent(
            ctx.trace_id, ctx.span_id, ctx.trace_flags
        )
        if ctx.trace_state:
            headers[TRACESTATE_HEADER] = ctx.trace_state.to_header()
    return headers


def extract_trace_context_from_headers(headers: Mapping[str, str]) -> Context | None:
    """An OpenTelemetry ``Context`` whose parent is the headers' W3C traceparent.

    Header names are matched case-insensitively.  Returns None when the headers
    carry no valid traceparent or OpenTelemetry is not installed.  Use the
    result as ``tracer.start_span(..., context=ctx)`` or
    ``opentelemetry.context.attach(ctx)``.
    """
    traceparent, tracestate = trace_headers_from(headers)
    if traceparent is None or not is_otel_available():
        return None
    propagation = require(
        "opentelemetry.trace.propagation.tracecontext",
        "extract_trace_context_from_headers",
        "otel",
    )
    carrier = {TRACEPARENT_HEADER: traceparent}
    if tracestate:
        carrier[TRACESTATE_HEADER] = tracestate
    ctx: Context = propagation.TraceContextTextMapPropagator().extract(carrier)
    trace = require(_TRACE_MODULE, "extract_trace_context_from_headers", "otel")
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def traced(
    span_name: str | None = None,
    kind: SpanKind | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Callable[[F], F]:
    """Run the decorated sync or async function in a span (INTERNAL by default).

    Without OpenTelemetry the function is returned unchanged.  The span is a
    child of the current context; an exception is recorded, sets ERROR status
    and propagates.  The span uses the global tracer provider at call time.
    """

    def decorator(func: F) -> F:
        if not is_otel_available():
            return func
        trace = require(_TRACE_MODULE, "traced", "otel")
        name = span_name or func.__name__
        span_kind = kind if kind is not None else trace.SpanKind.INTERNAL
        attrs = dict(attributes) if attributes else None
        tracer = trace.get_tracer("aperion_event_bus.traced")  # proxy: follows the global

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with tracer.start_as_current_span(name, kind=span_kind, attributes=attrs):
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(name, kind=span_kind, attributes=attrs):
                return func(*args, **kwargs)

        return cast(F, sync_wrapper)

    return decorator


def add_event_to_span(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """Add an event to the current recording span (no-op otherwise)."""
    if not is_loaded(_TRACE_MODULE):
        return
    span = get_current_span()
    if span is not None and span.is_recording():
        span.add_event(name, attributes=dict(attributes) if attributes else None)


def set_span_attribute(key: str, value: Any) -> None:
    """Set an attribute on the current recording span (no-op otherwise)."""
    if not is_loaded(_TRACE_MODULE):
        return
    span = get_current_span()
    if span is not None and span.is_recording():
        span.set_attribute(key, value)
