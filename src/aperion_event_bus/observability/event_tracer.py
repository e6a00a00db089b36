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
from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from types import TracebackType
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


# producer span contexts per generation (two kept): enough for consumers that run
# soon after the publish; kept small because every entry holds a few hundred bytes
# and a large table churns the CPU cache (measured: 1024 cost ~10% of a traced
# publish).  Older events' parents are parsed from the string (~3 us) instead.
_MAX_PRODUCED: Final = 256
_MAX_NAMES: Final = 1024  # span names + constant attributes cached per event type / handler

_NO_TRACE: Final = (None, None, None)

# (span name, attributes that are the same for every event of the type / handler)
_Shape = tuple[str, dict[str, Any]]


# trace-flags suffixes of a traceparent for the two values in use (not sampled / sampled)
_FLAG_SUFFIX: Final = {0: "-00", 1: "-01"}

# (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid): a SpanContext's fields
_Fields = tuple[int, int, bool, int, Any, bool]


def _format_traceparent(ctx: SpanContext) -> str:
    """The W3C traceparent of a valid span context (the reference formatting)."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def _w3c_strings(fields: _Fields, empty_state: object) -> tuple[str, str | None, str]:
    """``(traceparent, tracestate, trace id)`` of a valid span context's fields.

    The strings the W3C propagator would inject (and :func:`_format_traceparent`
    gives), without a carrier dict and the propagation API around it, and about
    three times cheaper than formatting: ``bytes.hex()`` of the big-endian ids
    at their fixed width is the zero-padded lowercase hex, and the flags suffix
    is looked up.  ``empty_state`` is the API's shared empty TraceState (most
    spans carry it): no header to format."""
    trace_id, span_id, _, flags, state, _ = fields
    trace_hex = trace_id.to_bytes(16, "big").hex()
    span_hex = span_id.to_bytes(8, "big").hex()
    suffix = _FLAG_SUFFIX.get(flags) or f"-{flags:02x}"
    traceparent = f"00-{trace_hex}-{span_hex}{suffix}"
    tracestate = None if state is empty_state else state.to_header() or None
    return traceparent, tracestate, trace_hex


def _fields_of(ctx: SpanContext) -> _Fields:
    """A span context's fields through its properties (any SpanContext type)."""
    return (
        ctx.trace_id, ctx.span_id, ctx.is_remote, ctx.trace_flags, ctx.trace_state, ctx.is_valid
    )


def _tuple_span_context(trace: Any) -> type | None:
    """``SpanContext`` when its instances are the tuple of their fields (see _Fields)
    and one made with ``tuple.__new__`` is the same as one made by the constructor,
    as in every opentelemetry-api 1.x; else None.

    The tracer then reads a span context by unpacking it (~5x cheaper than six
    property calls) and makes the remote parent context without the
    constructor's checks (its fields are known valid)."""
    cls: type = trace.SpanContext
    state = trace.DEFAULT_TRACE_STATE
    fields = (3, 5, True, trace.TraceFlags(1), state, True)
    try:
        made: Any = tuple.__new__(cls, fields)
        built: Any = cls(3, 5, True, fields[3], state)
    except Exception:  # pragma: no cover - a SpanContext that is not a tuple
        return None
    read = (_fields_of(made), _fields_of(built))
    if isinstance(built, tuple) and tuple(built) == fields == read[0] == read[1]:
        return cls
    return None  # pragma: no cover - another layout


def _attribute_value(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    return json.dumps(value, default=str, sort_keys=True, ensure_ascii=False)


def _cached(cache: dict[Any, _Shape], key: Any, shape: _Shape) -> _Shape:
    """Remember ``shape`` under ``key`` while the cache has room (_MAX_NAMES)."""
    if len(cache) < _MAX_NAMES:
        cache[key] = shape
    return shape


class _Constant:
    """Context manager whose block gets a fixed value and that does nothing else.

    The non-recording fast path returns these (shared, immutable): no span, no
    context change, so entering and leaving costs two method calls."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_NO_CONTEXT: Final = _Constant((None, None))


class _SpanScope:
    """Shared ``__exit__`` of the span scopes: record the error, restore the context, end."""

    __slots__ = ("_owner", "_span", "_token")

    _owner: EventTracer
    _span: Any
    _token: Any

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        owner = self._owner
        span = self._span
        try:
            if exc is not None:
                owner.record_error(span, exc)
        finally:
            owner._deactivate(self._token)
            span.end()


class _PublishScope(_SpanScope):
    """``with tracer.publish_span(...) as (traceparent, tracestate)`` (a recording tracer)."""

    __slots__ = ("_args",)

    def __init__(self, owner: EventTracer, args: tuple[Any, ...]) -> None:
        self._owner = owner
        self._args = args

    def __enter__(self) -> tuple[str | None, str | None]:
        owner = self._owner
        event_type, event_id, correlation_id, parent_traceparent, parent_tracestate, payload = (
            self._args
        )
        parent = (
            owner._context_from(parent_traceparent, parent_tracestate)
            if parent_traceparent
            else None
        )
        span, (traceparent, tracestate, _) = owner._start_producer(
            event_type, event_id, correlation_id, parent, payload
        )
        self._span = span
        self._token = owner._activate(span)
        return traceparent, tracestate


class _ConsumeScope(_SpanScope):
    """The CONSUMER span of one handler call: started and made current on enter."""

    __slots__ = ("_event", "_handler_name")

    def __init__(self, owner: EventTracer, event: TracedEvent, handler_name: str) -> None:
        self._owner = owner
        self._event = event
        self._handler_name = handler_name

    def __enter__(self) -> Span:
        span = self._owner._start_consumer(self._event, self._handler_name)
        self._span = span
        self._token = self._owner._activate(span)
        return span


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

    Cost: with a non-recording tracer (``NoOpTracerProvider``, or the global
    provider while no SDK is installed) no span is created at all: publishing
    only reads the current span's W3C context (so a parent still flows into
    the event's ``traceparent``), and a handler call only makes the event's
    context current when it is not current already.  With a recording tracer
    each span is one ``start_span`` call with a prebuilt attribute dict (names
    and constant attributes cached per event type and handler); the engine's
    producer span is started and ended at once (nothing runs inside it, so it
    is never made current), the handler's span is set directly in the
    handler's context, and the context of each producer span is remembered
    (bounded) so local consumers do not re-parse the ``traceparent`` string.
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
        context_api = require("opentelemetry.context", "EventTracer", "otel")
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
        self._context_cls = context_api.Context
        self._empty_context = context_api.Context()
        self._attach = context_api.attach
        self._detach = context_api.detach
        self._set_span_in_context = trace.set_span_in_context
        self._non_recording_span = trace.NonRecordingSpan
        self._span_context_cls = trace.SpanContext
        # SpanContext if its instances can be unpacked and made as tuples, else None
        self._tuple_sc = _tuple_span_context(trace)
        self._invalid_span = trace.INVALID_SPAN
        self._empty_state = trace.DEFAULT_TRACE_STATE
        # the contextvar behind OpenTelemetry's current Context and the span's key
        # in it: read and set directly when available (see _activate)
        self._context_var, self._span_key = self._fast_context(context_api)
        self.include_payload = include_payload
        self.redactor = redactor
        # one-slot cache: handlers of the same event share the parsed parent
        self._last_parent: tuple[str, str | None, Context] | None = None
        # traceparent -> (tracestate, span context fields) of recent producer spans,
        # in two generations: when the young one is full it becomes the old one
        self._produced: dict[str, tuple[str | None, _Fields]] = {}
        self._produced_old: dict[str, tuple[str | None, _Fields]] = {}
        self._producer_shapes: dict[str, _Shape] = {}
        self._consumer_shapes: dict[tuple[str, str], _Shape] = {}
        # non-recording fast path: one-slot caches keyed by span context identity
        self._noop_publish: tuple[SpanContext, tuple[str, str | None, str]] | None = None
        self._noop_consume: tuple[SpanContext, str, str | None] | None = None
        # Recording or not: a NoOpTracer never records; a ProxyTracer (global
        # provider) records once an SDK provider is installed, checked per call
        # until then.  Any other tracer takes the general path.
        self._noop = False
        self._proxy: Any = None
        if isinstance(self._tracer, trace.NoOpTracer):
            self._noop = True
        elif isinstance(self._tracer, trace.ProxyTracer) and hasattr(self._tracer, "_real_tracer"):
            self._proxy = self._tracer
            self._check_proxy()

    @staticmethod
    def _fast_context(context_api: Any) -> tuple[ContextVar[Any] | None, str]:
        """``(contextvar, span key)`` of the contextvars runtime context, else ``(None, "")``.

        OpenTelemetry's default runtime context keeps the current ``Context`` in one
        contextvar; setting it to a copy with the span added is exactly what
        ``attach(set_span_in_context(span))`` does, minus four calls."""
        key = getattr(
            require("opentelemetry.trace.propagation", "EventTracer", "otel"), "_SPAN_KEY", None
        )
        runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
        var = getattr(runtime, "_current_context", None)
        if isinstance(key, str) and isinstance(var, ContextVar):
            return var, key
        return None, ""  # pragma: no cover - another runtime context is configured

    def _check_proxy(self) -> None:
        proxy = self._proxy
        if proxy._real_tracer is None and getattr(self._trace, "_TRACER_PROVIDER", True) is None:
            self._noop = True  # no provider installed yet: the proxy is a no-op for now
            return
        real = proxy._tracer
        self._tracer = real
        self._proxy = None
        self._noop = isinstance(real, self._trace.NoOpTracer)

    @property
    def recording(self) -> bool:
        """False when spans are known not to be recorded (no-op tracer / no SDK yet)."""
        if self._proxy is not None:
            self._check_proxy()
        return not self._noop

    def adds_nothing(self) -> bool:
        """True when a PRODUCER span would add nothing to an event published now: a
        non-recording tracer and no valid current span (the event then carries no
        trace context, exactly as without tracing)."""
        if self._proxy is not None:
            self._check_proxy()
        if not self._noop:
            return False
        var = self._context_var  # no span in the current Context (the common case)?
        if var is not None and self._span_key not in var.get():
            return True
        return self._current_strings()[0] is None

    # -- the current context ----------------------------------------------

    def _current_span(self) -> Any:
        """The current span, or None when no span is set (``get_current_span()``
        returns INVALID_SPAN then)."""
        var = self._context_var
        if var is not None:
            return var.get().get(self._span_key)
        return self._trace.get_current_span()  # pragma: no cover - other runtime contexts

    def _current_context(self) -> Context | None:
        """The current Context (None: let the tracer read it).  Passing it to
        ``start_span`` saves the SDK and its sampler looking it up again, each
        through three calls."""
        var = self._context_var
        if var is not None:
            ctx: Context = var.get()
            return ctx
        return None  # pragma: no cover - another runtime context is configured

    def _activate(self, span: Span) -> object:
        """Make ``span`` current; returns the token for :meth:`_deactivate`."""
        var = self._context_var
        if var is not None:
            return var.set(self._context_cls({**var.get(), self._span_key: span}))
        return self._attach(self._set_span_in_context(span))  # pragma: no cover - other runtime contexts

    def _deactivate(self, token: Any) -> None:
        """Restore the context :meth:`_activate` replaced."""
        var = self._context_var
        if var is not None:
            try:
                var.reset(token)
                return
            except (ValueError, RuntimeError):  # left in another context: log as OTel does
                pass
        self._detach(token)

    def _only(self, span: Span) -> Context:
        """A Context holding just ``span`` (a parent for ``start_span``)."""
        ctx: Context
        if self._context_var is not None:
            ctx = self._context_cls({self._span_key: span})
        else:  # pragma: no cover - another runtime context is configured
            ctx = self._set_span_in_context(span, self._empty_context)
        return ctx

    # -- parent contexts --------------------------------------------------

    def _context_from(self, traceparent: str, tracestate: str | None) -> Context | None:
        """Parent Context for the consumer of an event carrying these W3C strings
        (a remote span context, as parsing the strings gives), or None if invalid."""
        last = self._last_parent
        if last is not None and last[0] == traceparent and last[1] == tracestate:
            return last[2]
        ctx: Context
        produced = self._produced.get(traceparent) or self._produced_old.get(traceparent)
        if produced is not None and produced[0] == tracestate:
            # a producer span of this tracer: same ids/flags/state as parsing would give
            ctx = self._only(self._non_recording_span(self._remote(produced[1])))
        else:
            carrier = {"traceparent": traceparent}
            if tracestate:
                carrier["tracestate"] = tracestate
            ctx = self._propagator.extract(carrier, context=self._empty_context)
            if not self._trace.get_current_span(ctx).get_span_context().is_valid:
                return None
        self._last_parent = (traceparent, tracestate, ctx)
        return ctx

    def _fields(self, ctx: SpanContext) -> _Fields:
        """``ctx``'s fields: the tuple itself when it is a plain SpanContext."""
        if type(ctx) is self._tuple_sc:
            return ctx
        return _fields_of(ctx)

    def _remote(self, fields: _Fields) -> SpanContext:
        """The remote twin of a valid span context's fields: what parsing its W3C
        strings gives (the same ids, flags and state, ``is_remote`` True)."""
        trace_id, span_id, _, flags, state, _ = fields
        cls = self._tuple_sc
        if cls is not None:  # without the constructor's checks: the fields are valid
            remote: SpanContext = tuple.__new__(cls, (trace_id, span_id, True, flags, state, True))
            return remote
        remote = self._span_context_cls(trace_id, span_id, True, flags, state)
        return remote

    def _remember(self, traceparent: str, tracestate: str | None, fields: _Fields) -> None:
        """Keep a producer span's context fields for local consumers (see _MAX_PRODUCED)."""
        produced = self._produced
        if len(produced) >= _MAX_PRODUCED:  # O(1) bound; lost entries are parsed instead
            self._produced_old = produced
            self._produced = produced = {}
        produced[traceparent] = (tracestate, fields)

    # -- spans ------------------------------------------------------------

    def publish_context(
        self,
        event_type: str,
        event_id: str,
        correlation_id: str | None,
        payload: Mapping[str, Any] | None = None,
    ) -> tuple[str | None, str | None, str | None]:
        """The engine's PRODUCER span for an event it is building: started and ended
        in this call; returns ``(traceparent, tracestate, trace_id)`` for the event.

        The parent is the current OpenTelemetry context.  The span is never made
        current (nothing runs inside it), which saves the context switch of
        :meth:`publish_span`; ``trace_id`` (32 hex, None without a trace) is the
        conversation id to use when ``correlation_id`` is None.  With a
        non-recording tracer no span is created: the strings are the current
        span's context, if any.
        """
        if self._proxy is not None:
            self._check_proxy()
        if self._noop:
            return self._current_strings()
        span, strings = self._start_producer(event_type, event_id, correlation_id, None, payload)
        span.end()
        return strings

    def publish_span(
        self,
        event_type: str,
        event_id: str,
        correlation_id: str | None,
        parent_traceparent: str | None = None,
        parent_tracestate: str | None = None,
        *,
        payload: Mapping[str, Any] | None = None,
    ) -> AbstractContextManager[tuple[str | None, str | None]]:
        """PRODUCER span for one published event; yields its ``(traceparent, tracestate)``.

        The parent is ``parent_traceparent`` when given and valid (e.g. from an
        incoming request or a replayed event), else the current OpenTelemetry
        context.  Store the yielded strings on the event.  The span is current
        inside the block; an exception is recorded (redacted) and re-raised.
        If ``correlation_id`` is None, the trace id is used as the conversation
        id (see :meth:`trace_id_for_correlation`).

        With a non-recording tracer and no ``parent_traceparent``, no span is
        created: the block gets the current span's context (if any), which is
        exactly what the no-op tracer's span would carry.
        """
        if self._proxy is not None:
            self._check_proxy()
        if self._noop and not parent_traceparent:
            traceparent, tracestate, _ = self._current_strings()
            return _NO_CONTEXT if traceparent is None else _Constant((traceparent, tracestate))
        return _PublishScope(
            self,
            (event_type, event_id, correlation_id, parent_traceparent, parent_tracestate, payload),
        )

    def _current_strings(self) -> tuple[str | None, str | None, str | None]:
        """Non-recording tracer: the W3C strings of the current span (cached by identity)."""
        span = self._current_span()
        if span is None:
            return _NO_TRACE
        sc = span.get_span_context()
        cached = self._noop_publish
        if cached is not None and cached[0] is sc:
            return cached[1]
        fields = self._fields(sc)
        if not fields[5]:
            return _NO_TRACE
        strings = _w3c_strings(fields, self._empty_state)
        self._noop_publish = (sc, strings)
        return strings

    def _start_producer(
        self,
        event_type: str,
        event_id: str,
        correlation_id: str | None,
        parent: Context | None,
        payload: Mapping[str, Any] | None,
    ) -> tuple[Span, tuple[str | None, str | None, str | None]]:
        name, constant = self._producer_shapes.get(event_type) or _cached(
            self._producer_shapes,
            event_type,
            (
                "publish " + event_type,
                {
                    ATTR_SYSTEM: MESSAGING_SYSTEM,
                    ATTR_DESTINATION: event_type,
                    ATTR_OPERATION_TYPE: OPERATION_SEND,
                    ATTR_OPERATION_NAME: "publish",
                },
            ),
        )
        attributes = {**constant, ATTR_MESSAGE_ID: event_id}
        if correlation_id is not None:
            attributes[ATTR_CONVERSATION_ID] = correlation_id
        if payload is not None and self.include_payload:
            attributes.update(self._payload_attributes(payload))
        span = self._tracer.start_span(
            name,
            context=parent if parent is not None else self._current_context(),
            kind=self._producer,
            attributes=attributes,
        )
        span_ctx = span.get_span_context()
        fields = self._fields(span_ctx)
        if not fields[5]:  # no-op tracer and no valid parent anywhere
            return span, _NO_TRACE
        strings = _w3c_strings(fields, self._empty_state)
        if correlation_id is None and span.is_recording():
            # the trace id is only known now (a root span's is made by start_span)
            span.set_attribute(ATTR_CONVERSATION_ID, strings[2])
        self._remember(strings[0], strings[1], fields)
        return span, strings

    def handler_span(
        self, event: TracedEvent, handler_name: str
    ) -> AbstractContextManager[Span] | None:
        """The engine's CONSUMER span for one handler call, as :meth:`consume_span`,
        or None when there is nothing to do: a non-recording tracer and the event's
        context (or the absence of one) is already the current one.  The engine
        then runs the handler as it would without tracing."""
        if self._proxy is not None:
            self._check_proxy()
        if self._noop:
            var = self._context_var  # no context on the event, no span current (common)?
            if not event.traceparent and var is not None and self._span_key not in var.get():
                return None
            if self._is_current(event):
                return None
        return _ConsumeScope(self, event, handler_name)

    def consume_span(self, event: TracedEvent, handler_name: str) -> AbstractContextManager[Span]:
        """CONSUMER span for one handler call; yields the span.

        The parent comes from ``event.traceparent``/``event.tracestate`` (a
        root span when the event has none: the event's own context is the
        truth, not whatever happens to be current on the worker).  The span is
        the current OpenTelemetry context inside the block, so events published
        by the handler become its children.  An exception escaping the block is
        recorded (redacted), sets ERROR status and is re-raised; if the engine
        catches handler errors itself, it calls :meth:`record_error` /
        :meth:`record_timeout` with the yielded span instead.

        With a non-recording tracer no span is created: when the event's
        context (or the absence of one) already is the current one, as it is
        for handlers running in the publisher's context, the block runs
        unchanged (and gets the current span); otherwise the event's context is
        made current.
        """
        scope = self.handler_span(event, handler_name)
        if scope is not None:
            return scope
        span = self._current_span()
        return _Constant(span if span is not None else self._invalid_span)

    def _is_current(self, event: TracedEvent) -> bool:
        """Non-recording tracer: whether the event's W3C context is the current one."""
        span = self._current_span()
        traceparent = event.traceparent
        if not traceparent:
            return span is None or not span.get_span_context().is_valid
        if span is None:
            return False
        sc = span.get_span_context()
        tracestate = event.tracestate
        cached = self._noop_consume
        if cached is not None and cached[0] is sc:
            return cached[1] == traceparent and cached[2] == tracestate
        fields = self._fields(sc)
        if not fields[5]:
            return False
        current_traceparent, current_tracestate, _ = _w3c_strings(fields, self._empty_state)
        if current_traceparent == traceparent and current_tracestate == (tracestate or None):
            self._noop_consume = (sc, traceparent, tracestate)
            return True
        return False

    def _start_consumer(self, event: TracedEvent, handler_name: str) -> Span:
        traceparent = event.traceparent
        parent = self._context_from(traceparent, event.tracestate) if traceparent else None
        event_type = event.event_type
        key = (event_type, handler_name)
        name, constant = self._consumer_shapes.get(key) or _cached(
            self._consumer_shapes,
            key,
            (
                "process " + event_type,
                {
                    ATTR_SYSTEM: MESSAGING_SYSTEM,
                    ATTR_DESTINATION: event_type,
                    ATTR_OPERATION_TYPE: OPERATION_PROCESS,
                    ATTR_OPERATION_NAME: OPERATION_PROCESS,
                    ATTR_SUBSCRIPTION: handler_name,
                },
            ),
        )
        attributes = {**constant, ATTR_MESSAGE_ID: event.event_id}
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
        span: Span = self._tracer.start_span(
            name,
            context=parent if parent is not None else self._empty_context,
            kind=self._consumer,
            attributes=attributes,
        )
        return span

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
