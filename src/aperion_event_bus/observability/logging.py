"""Structured logging for the library: logger tree, context filter, JSON lines, structlog.

* Every library logger lives under ``aperion_event_bus`` (:func:`get_logger`).
  The library never configures the root logger and adds no handlers of its own
  (not even a ``NullHandler``: with no logging configured, Python's last-resort
  handler still prints warnings and errors, so a failing handler is never
  silent).
* :class:`EventContextFilter` stamps each record with ``correlation_id``,
  ``event_id`` and ``event_type`` from the current bus context (and
  ``trace_id``/``span_id`` when an OpenTelemetry span is current).  Install it
  on *handlers*: filters on a logger do not see records of its child loggers.
* :class:`JsonFormatter` writes one JSON object per line.
* :func:`structlog_processors` is a ready processor chain for structlog users.
* :func:`configure_logging` wires these onto one handler of the library logger,
  for applications that want it (opt-in).

Values already on a record (passed with ``extra=``) are never overwritten.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from ._optional import require

__all__ = [
    "CONTEXT_FIELDS",
    "LIBRARY_LOGGER",
    "EventContextFilter",
    "JsonFormatter",
    "configure_logging",
    "event_context",
    "get_logger",
    "structlog_processors",
]

LIBRARY_LOGGER: Final = "aperion_event_bus"
CONTEXT_FIELDS: Final = ("correlation_id", "event_id", "event_type")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "trace_id", "span_id", *CONTEXT_FIELDS}
)


class _StringRedactor(Protocol):
    def redact_string(self, text: str, /) -> str: ...


def get_logger(name: str | None = None) -> logging.Logger:
    """A logger in the library tree: ``get_logger("dispatch")`` -> ``aperion_event_bus.dispatch``.

    Names already starting with ``aperion_event_bus`` (e.g. ``__name__`` of a
    library module) are used as they are; ``None`` gives the tree's root.
    """
    if not name:
        return logging.getLogger(LIBRARY_LOGGER)
    if name == LIBRARY_LOGGER or name.startswith(LIBRARY_LOGGER + "."):
        return logging.getLogger(name)
    return logging.getLogger(f"{LIBRARY_LOGGER}.{name}")


def event_context() -> dict[str, str | None]:
    """``{correlation_id, event_id, event_type}`` of the current bus context.

    Reads ``aperion_event_bus.context`` (imported lazily; all None if it is
    unavailable): the correlation id from ``get_correlation_id()``, falling back
    to the current event's, and the ids of ``current_event()``.
    """
    try:
        from aperion_event_bus.context import current_event, get_correlation_id
    except ImportError:
        return dict.fromkeys(CONTEXT_FIELDS)
    event = current_event()
    correlation_id = get_correlation_id()
    if event is None:
        return {"correlation_id": correlation_id, "event_id": None, "event_type": None}
    if correlation_id is None:
        correlation_id = getattr(event, "correlation_id", None)
    return {
        "correlation_id": correlation_id,
        "event_id": getattr(event, "event_id", None),
        "event_type": getattr(event, "event_type", None),
    }


def _trace_ids() -> tuple[str | None, str | None]:
    trace = sys.modules.get("opentelemetry.trace")  # never import it just for logging
    if trace is None:
        return None, None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def _stamp(record: logging.LogRecord) -> None:
    if getattr(record, "_aperion_stamped", False):
        return
    record._aperion_stamped = True
    values = vars(record)
    if not all(values.get(f) is not None for f in CONTEXT_FIELDS):
        for key, value in event_context().items():
            if values.get(key) is None:
                values[key] = value
    if "trace_id" not in values:
        values["trace_id"], values["span_id"] = _trace_ids()


class EventContextFilter(logging.Filter):
    """Adds ``correlation_id``, ``event_id``, ``event_type``, ``trace_id`` and
    ``span_id`` attributes to every record (None when unknown); never drops one.

    Use the attributes in format strings, e.g.
    ``"%(asctime)s %(levelname)s [%(correlation_id)s] %(name)s: %(message)s"``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        _stamp(record)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line.

    Keys: ``timestamp`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
    ``message``, ``correlation_id``, ``event_id``, ``event_type``, ``trace_id``
    and ``span_id`` (when a span is current), ``exception`` (formatted
    traceback, when there is one), ``stack`` (with ``stack_info``), then every
    ``extra=`` field.  Values that are not JSON types are written with ``str()``.

    ``redactor`` (anything with ``redact_string``) is applied to the message,
    exception and string extras - a second line of defence; the redaction
    filter on the handler remains the primary one.
    """

    def __init__(self, *, redactor: _StringRedactor | None = None, ensure_ascii: bool = False):
        super().__init__()
        self.redactor = redactor
        self.ensure_ascii = ensure_ascii

    def format(self, record: logging.LogRecord) -> str:
        _stamp(record)
        values = vars(record)
        redact = self.redactor.redact_string if self.redactor is not None else None
        message = record.getMessage()
        doc: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(message) if redact else message,
            "correlation_id": values.get("correlation_id"),
            "event_id": values.get("event_id"),
            "event_type": values.get("event_type"),
        }
        if values.get("trace_id"):
            doc["trace_id"] = values["trace_id"]
            doc["span_id"] = values.get("span_id")
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = redact(record.exc_text) if redact else record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        for key, value in values.items():
            if key not in _RECORD_ATTRS and not key.startswith("_") and key not in doc:
                doc[key] = redact(value) if redact and isinstance(value, str) else value
        return json.dumps(doc, default=str, ensure_ascii=self.ensure_ascii)


def configure_logging(
    handler: logging.Handler | None = None,
    *,
    json_format: bool = False,
    level: int | str | None = None,
    redaction_filter: logging.Filter | None = None,
) -> logging.Handler:
    """Attach one handler to the ``aperion_event_bus`` logger (not the root logger).

    The handler (a ``StreamHandler`` on stderr by default) gets the
    :class:`EventContextFilter`, the optional ``redaction_filter`` (e.g. the
    redaction module's logging filter) and :class:`JsonFormatter` when
    ``json_format`` is true.  Calling it again with the same handler does not
    add it twice.  Returns the handler.
    """
    if handler is None:
        handler = logging.StreamHandler()
    if not any(isinstance(f, EventContextFilter) for f in handler.filters):
        handler.addFilter(EventContextFilter())
    if redaction_filter is not None and redaction_filter not in handler.filters:
        handler.addFilter(redaction_filter)
    if json_format:
        handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(LIBRARY_LOGGER)
    if handler not in logger.handlers:
        logger.addHandler(handler)
    if level is not None:
        logger.setLevel(level)
    return handler


# -- structlog ---------------------------------------------------------------

EventDict = MutableMapping[str, Any]
Processor = Callable[[Any, str, EventDict], Any]

_STRUCTLOG_KEEP: Final = frozenset({"timestamp", "level", "logger", *CONTEXT_FIELDS})


def _add_event_context(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: add correlation_id/event_id/event_type when missing."""
    for key, value in event_context().items():
        if value is not None and event_dict.get(key) is None:
            event_dict[key] = value
    return event_dict


def _redaction_processor(redactor: Any) -> Processor:
    """Wrap a Redactor-like object (``redact(obj)``) as a structlog processor."""

    def redact_event_dict(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
        keep = {k: event_dict[k] for k in _STRUCTLOG_KEEP if k in event_dict}
        redacted = redactor.redact({k: v for k, v in event_dict.items() if k not in keep})
        if not isinstance(redacted, MutableMapping):
            return event_dict
        redacted.update(keep)
        return redacted

    return redact_event_dict


def structlog_processors(redactor: Any = None, *, json_output: bool = True) -> list[Processor]:
    """A structlog processor chain for services using the bus.

    Order: merge ``structlog.contextvars``, add the bus context
    (``correlation_id``/``event_id``/``event_type``), log level, ISO UTC
    timestamp, stack info, formatted exception, then redaction, then the
    renderer (``JSONRenderer`` when ``json_output``, else none - append your
    own).  Redaction runs after exceptions are formatted so tracebacks are
    redacted too.

    ``redactor`` is either a structlog processor (a callable taking
    ``(logger, method_name, event_dict)``) such as the redaction module's
    structlog processor, or an object with ``redact(obj)`` (a ``Redactor``),
    which is wrapped so every value except timestamp/level/logger/ids is
    redacted.  Use::

        structlog.configure(processors=structlog_processors(redactor))

    Needs the ``structlog`` extra.
    """
    structlog = require("structlog", "structlog_processors", "structlog")
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_event_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    if redactor is not None:
        if hasattr(redactor, "redact"):
            processors.append(_redaction_processor(redactor))
        elif callable(redactor):
            processors.append(redactor)
        else:
            raise TypeError("redactor must be a structlog processor or an object with redact(obj)")
    if json_output:
        processors.append(structlog.processors.JSONRenderer())
    return processors
