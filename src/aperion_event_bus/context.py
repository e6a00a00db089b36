"""Correlation and causation context, carried in contextvars.

The correlation id ties together everything caused by one request; the current
event (set while a handler runs) makes events published inside a handler its
children. Header helpers read and write the ids on HTTP-like header mappings and
never pass an unsafe value through.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import Event

__all__ = [
    "CORRELATION_ID_HEADER",
    "REQUEST_ID_HEADER",
    "CorrelationContext",
    "add_correlation_to_log_extra",
    "clear_correlation_id",
    "current_event",
    "extract_correlation_id_from_headers",
    "generate_correlation_id",
    "get_causation_id",
    "get_correlation_id",
    "get_headers_with_correlation",
    "is_valid_correlation_id",
    "set_correlation_id",
]

CORRELATION_ID_HEADER = "X-Correlation-ID"
REQUEST_ID_HEADER = "X-Request-ID"
TRACEPARENT_HEADER = "traceparent"
MAX_CORRELATION_ID_LENGTH = 128

_correlation_id: ContextVar[str | None] = ContextVar("aperion_correlation_id", default=None)
_current_event: ContextVar[Event | None] = ContextVar("aperion_current_event", default=None)


def generate_correlation_id() -> str:
    """Return a new random correlation id (a uuid4 string)."""
    return str(uuid.uuid4())


def get_correlation_id() -> str | None:
    """The correlation id of the current context, or None."""
    return _correlation_id.get()


def set_correlation_id(correlation_id: str | None) -> Token[str | None]:
    """Set the correlation id of the current context; returns a token for ``reset``."""
    return _correlation_id.set(correlation_id)


def clear_correlation_id() -> None:
    """Remove the correlation id from the current context."""
    _correlation_id.set(None)


def current_event() -> Event | None:
    """The event whose handler is running in this context, or None outside handlers."""
    return _current_event.get()


def get_causation_id() -> str | None:
    """The id of the event being handled: the causation id of events published now."""
    event = _current_event.get()
    return None if event is None else event.event_id


def is_valid_correlation_id(value: object) -> bool:
    """True for a printable ASCII string of 1-128 characters without CR/LF."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_CORRELATION_ID_LENGTH
        and value.isascii()
        and value.isprintable()
    )


def _header(headers: Mapping[str, Any], name: str) -> Any:
    lowered = name.lower()
    for key, value in headers.items():
        if isinstance(key, (str, bytes)):
            k = key.decode("latin-1") if isinstance(key, bytes) else key
            if k.lower() == lowered:
                return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


_TRACEPARENT_RE = re.compile(
    r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?[ \t]*\Z"
)


def parse_traceparent(value: object) -> tuple[str, str, str] | None:
    """``(trace_id, parent_span_id, flags)`` of a valid W3C ``traceparent``, else None.

    Follows the W3C rules: lowercase hex, version ``ff`` invalid, version ``00``
    has exactly four fields, all-zero trace and span ids invalid; a later version's
    extra fields must be visible ASCII (CR/LF or control characters anywhere: None)."""
    if not isinstance(value, str) or len(value) > 512:
        return None
    match = _TRACEPARENT_RE.match(value)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id, flags


def trace_id_from_traceparent(value: object) -> str | None:
    """The 32-hex trace id of a valid W3C ``traceparent`` value, else None."""
    parsed = parse_traceparent(value)
    return parsed[0] if parsed else None


def extract_correlation_id_from_headers(headers: Mapping[str, Any]) -> str:
    """Correlation id from headers: X-Correlation-ID, else X-Request-ID, else the
    traceparent trace id, else a fresh id. Names match case-insensitively; spaces and
    tabs around a value are ignored (HTTP's optional whitespace), and a value that is
    not printable ASCII, is too long or holds CR/LF anywhere is replaced by a fresh id.
    """
    for name in (CORRELATION_ID_HEADER, REQUEST_ID_HEADER):
        value = _header(headers, name)
        if value is not None:
            # only " \t": a trailing CR/LF (header injection) must make the value invalid
            value = value.strip(" \t") if isinstance(value, str) else value
            return value if is_valid_correlation_id(value) else generate_correlation_id()
    trace_id = trace_id_from_traceparent(_header(headers, TRACEPARENT_HEADER))
    return trace_id if trace_id is not None else generate_correlation_id()


def get_headers_with_correlation() -> dict[str, str]:
    """``{"X-Correlation-ID": id}`` for outgoing requests, or ``{}`` without one."""
    correlation_id = _correlation_id.get()
    return {CORRELATION_ID_HEADER: correlation_id} if correlation_id else {}


def add_correlation_to_log_extra(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A new dict: ``extra`` plus ``correlation_id`` when one is set."""
    result = dict(extra) if extra else {}
    correlation_id = _correlation_id.get()
    if correlation_id is not None:
        result["correlation_id"] = correlation_id
    return result


class CorrelationContext:
    """Context manager that sets a correlation id and restores the previous one.

    ``with CorrelationContext() as cid:`` generates an id when none is given.
    Also usable with ``async with``.
    """

    __slots__ = ("_token", "correlation_id")

    def __init__(self, correlation_id: str | None = None) -> None:
        self.correlation_id = correlation_id
        self._token: Token[str | None] | None = None

    def __enter__(self) -> str:
        if self.correlation_id is None:
            self.correlation_id = generate_correlation_id()
        self._token = _correlation_id.set(self.correlation_id)
        return self.correlation_id

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _correlation_id.reset(self._token)
            self._token = None

    async def __aenter__(self) -> str:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
