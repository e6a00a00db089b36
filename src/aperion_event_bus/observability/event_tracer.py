"""EventTracer: the spans the bus engine creates for each event and handler call.

One PRODUCER span per published event and one CONSUMER span per handler call,
named and attributed after the OpenTelemetry messaging semantic conventions
(checked against opentelemetry-semantic-conventions 0.66b0: the producer
operation type is ``send``, ``publish`` being deprecated)::

    "publish {event_type}"   kind PRODUCER  messaging.operation.type = "send"
    "process {event_type}"   kind CONSUMER  messaging.operation.type = "process"

    messaging.system                        "aperion_event_bus"
    messaging.destination.name              event type
    messaging.operation.name                "publish" / "process"
    messaging.message.id                    event id
    messaging.message.conversation_id       correlation id
    messaging.destination.subscription.name handler name (consumer spans)
    aperion_event_bus.causation_id / .source  when set (consumer spans)

The producer span's W3C context is what the engine stores on the event
(``traceparent``/``tracestate``); the consumer span's parent is read back from
those strings, so a trace survives thread hops, child events, the durable store
and transports.  Exceptions are recorded with a redacted message and stack
trace.  Payload values are added only with ``include_payload=True``, redacted.

The engine creates an ``EventTracer`` only when tracing is configured;
constructing one imports ``opentelemetry`` (MissingExtraError if absent).
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..errors import ConfigurationError
from ._optional import require

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanContext, TracerProvider

__all__ = [
    "MESSAGING_SYSTEM",
    "TRACER_NAME",
    "EventTracer",
    "RedactorLike",
    "TracedEvent",
]

TRACER_NAME: Final = "aperion_event_bus"
MESSAGING_SYSTEM: Final = "aperion_event_bus"

# OpenTelemetry messaging semantic conventions (attribute names).
ATTR_SYSTEM: Final = "messaging.system"
ATTR_DESTINATION: Final = "messaging.destination.name"
ATTR_OPERATION_TYPE: Final = "messaging.operation.type"
ATTR_OPERATION_NAME: Final = "messaging.operation.name"
ATTR_MESSAGE_ID: Final = "messaging.message.id"
ATTR_CONVERSATION_ID: Final = "messaging.message.conversation_id"
ATTR_SUBSCRIPTION: Final = "messaging.destination.subscription.name"
ATTR_ERROR_TYPE: Final = "error.type"
ATTR_EXCEPTION_MESSAGE: Final = "exception.message"
ATTR_EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
OPERATION_SEND: Final = "send"
OPERATION_PROCESS: Final = "process"
# Library-specific attributes.
ATTR_CAUSATION_ID: Final = "aperion_event_bus.causation_id"
ATTR_SOURCE: Final = "aperion_event_bus.source"
ATTR_PAYLOAD_PREFIX: Final = "aperion_event_bus.payload."


class RedactorLike(Protocol):
    """What EventTracer needs from ``aperion_event_bus.redaction.Redactor``."""

    def redact_string(self, text: str, /) -> str: ...

    def redact(self, obj: Any, /) -> Any: ...


class TracedEvent(Protocol):
    """The event attributes EventTracer reads (``aperion_event_bus.Event`` has them)."""

    @property
    def event_type(self) -> str: ...

    @property
    def event_id(self) -> str: ...

    @property
    def correlation_id(self) -> str | None: ...

    @property
    def causation_id(self) -> str | None: ...

    @property
    def traceparent(self) -> str | None: ...

    @property
    def tracestate(self) -> str | None: ...

    @property
    def payload(self) -> object: ...

    @property
    def source(self) -> str | None: ...


def _format_traceparent(ctx: SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def _attribute_value(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    return json.dumps(value, default=str, sort_keys=True, ensure_ascii=False)


class EventTracer:
    """Creates the bus's producer and consumer spans.

    Args:
        tracer_provider: an ``opentelemetry.trace.TracerProvider``; the global
            provider when omitted (resolved lazily, so it may be set later).
        include_payload: add payload values as ``aperion_event_bus.payload.<key>``
            span attributes.  Requires ``redactor``; values are redacted first.
        redactor: object with ``redact_string(str) -> str`` and
            ``redact(obj) -> obj`` (e.g. ``aperion_event_bus.redaction.Redactor``),
            applied to exception messages, stack traces and payload attributes.
            Without one, exception text is recorded as is.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        include_payload: bool = False,
        redactor: RedactorLike | None = None,
    ) -> None:
        if include_payload and redactor is None:
            raise ConfigurationError(
                "EventTracer(include_payload=True) needs a redactor: payload values "
                "are only put on spans after redaction"
            )
        trace = require("opentelemetry.trace", "EventTracer", "otel")
        self._context_api = require("opentelemetry.context", "EventTracer", "otel")
        propagation = require("opentelemetry.trace.propagation.tracecontext", "EventTracer", "otel")
        self._trace = trace
        if tracer_provider is None:
            self._tracer = trace.get_tracer(TRACER_NAME)
        else:
            self._tracer = tracer_provider.get_tracer(TRACER_NAME)
        self._propagator = propagation.TraceContextTextMapPropagator()
        self._producer = trace.SpanKind.PRODUCER
        self._consumer = trace.SpanKind.CONSUMER
        self._status_error = trace.StatusCode.ERROR
        self._status_cls = trace.Status
        self._empty_context = self._context_api.Context()
        self.include_payload = include_payload
        self.redactor = redactor
        # one-slot cache: handlers of the same event share the parsed parent
        self._last_parent: tuple[str, str | None, Context] | None = None

    # -- parent contexts --------------------------------------------------

    def _context_from(self, traceparent: str, tracestate: str | None) -> Context | None:
        last = self._last_parent
        if last is not None and last[0] == traceparent and last[1] == tracestate:
            return last[2]
        carrier = {"traceparent": traceparent}
        if tracestate:
            carrier["tracestate"] = tracestate
        ctx: Context = self._propagator.extract(carrier, context=self._empty_context)
        if not self._trace.get_current_span(ctx).get_span_context().is_valid:
            return None
        self._last_parent = (traceparent, tracestate, ctx)
        return ctx

    # -- spans ------------------------------------------------------------

    @contextmanager
    def publish_span(
        self,
        event_type: str,
        event_id: str,
        correlation_id: str | None,
        parent_traceparent: str | None = None,
        parent_tracestate: str | None = None,
        *,
        payload: Mapping[str, Any] | None = None,
    ) -> Iterator[tuple[str | None, str | None]]:
        """PRODUCER span for one published event; yields its ``(traceparent, tracestate)``.

        The parent is ``parent_traceparent`` when given and valid (e.g. from an
        incoming request or a replayed event), else the current OpenTelemetry
        context.  Store the yielded strings on the event.  The span is current
        inside the block; an exception is recorded (redacted) and re-raised.
        If ``correlation_id`` is None, the trace id is used as the conversation
        id (see :meth:`trace_id_for_correlation`).
        """
        parent = (
            self._context_from(parent_traceparent, parent_tracestate)
            if parent_traceparent
            else None
        )
        attributes: dict[str, Any] = {
            ATTR_SYSTEM: MESSAGING_SYSTEM,
            ATTR_DESTINATION: event_type,
            ATTR_OPERATION_TYPE: OPERATION_SEND,
            ATTR_OPERATION_NAME: "publish",
            ATTR_MESSAGE_ID: event_id,
        }
        if correlation_id is not None:
            attributes[ATTR_CONVERSATION_ID] = correlation_id
        if payload is not None and self.include_payload:
            attributes.update(self._payload_attributes(payload))
        span = self._tracer.start_span(
            "publish " + event_type,
            context=parent,
            kind=self._producer,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        span_ctx = span.get_span_context()
        traceparent: str | None
        tracestate: str | None
        if span_ctx.is_valid:
            traceparent = _format_traceparent(span_ctx)
            tracestate = span_ctx.trace_state.to_header() or None
            if correlation_id is None:
                span.set_attribute(ATTR_CONVERSATION_ID, f"{span_ctx.trace_id:032x}")
        else:  # no-op tracer and no valid parent anywhere: nothing to propagate
            traceparent = tracestate = None
        token = self._context_api.attach(self._trace.set_span_in_context(span))
        try:
            yield traceparent, tracestate
        except BaseException as exc:
            self.record_error(span, exc)
            raise
        finally:
            self._context_api.detach(token)
            span.end()

    @contextmanager
    def consume_span(self, event: TracedEvent, handler_name: str) -> Iterator[Span]:
        """CONSUMER span for one handler call; yields the span.

        The parent comes from ``event.traceparent``/``event.tracestate`` (a
        root span when the event has none: the event's own context is the
        truth, not whatever happens to be current on the worker).  The span is
        the current OpenTelemetry context inside the block, so events published
        by the handler become its children.  An exception escaping the block is
        recorded (redacted), sets ERROR status and is re-raised; if the engine
        catches handler errors itself, it calls :meth:`record_error` /
        :meth:`record_timeout` with the yielded span instead.
        """
        traceparent = event.traceparent
        parent = self._context_from(traceparent, event.tracestate) if traceparent else None
        event_type = event.event_type
        attributes: dict[str, Any] = {
            ATTR_SYSTEM: MESSAGING_SYSTEM,
            ATTR_DESTINATION: event_type,
            ATTR_OPERATION_TYPE: OPERATION_PROCESS,
            ATTR_OPERATION_NAME: OPERATION_PROCESS,
            ATTR_MESSAGE_ID: event.event_id,
            ATTR_SUBSCRIPTION: handler_name,
        }
        correlation_id = event.correlation_id
        if correlation_id is not None:
            attributes[ATTR_CONVERSATION_ID] = correlation_id
        causation_id = event.causation_id
        if causation_id is not None:
            attributes[ATTR_CAUSATION_ID] = causation_id
        source = event.source
        if source is not None:
            attributes[ATTR_SOURCE] = source
        if self.include_payload:
            payload = event.payload
            if isinstance(payload, Mapping):
                attributes.update(self._payload_attributes(payload))
        span = self._tracer.start_span(
            "process " + event_type,
            context=parent if parent is not None else self._empty_context,
            kind=self._consumer,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        token = self._context_api.attach(self._trace.set_span_in_context(span))
        try:
            yield span
        except BaseException as exc:
            self.record_error(span, exc)
            raise
        finally:
            self._context_api.detach(token)
            span.end()

    # -- errors -----------------------------------------------------------

    def record_error(self, span: Span, exc: BaseException) -> None:
        """Record ``exc`` on ``span`` with redacted text and set ERROR status."""
        if not span.is_recording():
            return
        exc_type = type(exc)
        module = exc_type.__module__
        type_name = (
            exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"
        )
        span.set_attribute(ATTR_ERROR_TYPE, type_name)
        if not isinstance(exc, Exception):  # cancellation, interpreter exit: no details
            span.set_status(self._status_cls(self._status_error, type_name))
            return
        message = self._redact(str(exc))
        stacktrace = self._redact("".join(traceback.format_exception(exc)))
        span.record_exception(
            exc,
            attributes={ATTR_EXCEPTION_MESSAGE: message, ATTR_EXCEPTION_STACKTRACE: stacktrace},
        )
        span.set_status(
            self._status_cls(
                self._status_error, f"{type_name}: {message}" if message else type_name
            )
        )

    def record_timeout(self, span: Span, timeout_seconds: float) -> None:
        """Mark ``span`` as a handler that exceeded its timeout (cancelled or abandoned)."""
        if not span.is_recording():
            return
        span.set_attribute(ATTR_ERROR_TYPE, "timeout")
        span.set_status(
            self._status_cls(self._status_error, f"handler timed out after {timeout_seconds:g}s")
        )

    def _redact(self, text: str) -> str:
        redactor = self.redactor
        if redactor is None or not text:
            return text
        try:
            return redactor.redact_string(text)
        except Exception:  # never let redaction failure leak the original text
            return "<redaction failed>"

    def _payload_attributes(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        redactor = self.redactor
        if redactor is None:  # pragma: no cover - prevented by __init__
            return {}
        try:
            redacted = redactor.redact(dict(payload))
        except Exception:
            return {ATTR_PAYLOAD_PREFIX + "error": "<redaction failed>"}
        if not isinstance(redacted, Mapping):
            return {}
        return {ATTR_PAYLOAD_PREFIX + str(k): _attribute_value(v) for k, v in redacted.items()}

    # -- correlation ------------------------------------------------------

    def trace_id_for_correlation(self) -> str | None:
        """Correlation id to use when none was given: the current trace id (32 hex).

        The rule (documented in docs/observability.md): an explicit correlation
        id wins, then the one inherited from the current bus context (parent
        event / CorrelationContext); with tracing on, the current trace id
        (this method); if there is no current span either, the trace id of the
        new producer span (``trace_id_from_traceparent`` of what
        :meth:`publish_span` yields); else a newly generated id.
        """
        ctx = self._trace.get_current_span().get_span_context()
        return f"{ctx.trace_id:032x}" if ctx.is_valid else None
