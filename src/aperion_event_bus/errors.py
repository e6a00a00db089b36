"""Exception hierarchy: every error the bus raises derives from EventBusError.

Several classes also derive from the matching built-in (ValueError, TimeoutError,
ImportError, ...) so code written against the 1.x API keeps catching them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .results import PublishResult

__all__ = [
    "BackpressureError",
    "BusClosedError",
    "ConfigurationError",
    "EventBusError",
    "HandlerError",
    "HandlerTimeoutError",
    "MissingExtraError",
    "MissingFieldError",
    "PublishFailedError",
    "SerializationError",
    "ValidationError",
]


class EventBusError(Exception):
    """Base class of every exception raised by aperion_event_bus."""


class ValidationError(EventBusError, ValueError):
    """An event type, payload or argument is not acceptable.

    ``event_type`` names the offending event type and ``field`` the offending
    payload field, when known.
    """

    def __init__(
        self, message: str, event_type: str | None = None, *, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.event_type = event_type
        self.field = field


class MissingFieldError(ValidationError, KeyError):
    """A record lacks a required field (``Event.from_jsonl``/``from_dict``).

    Also a ``KeyError``, which 1.x raised there, so both ``except KeyError`` and
    ``except ValidationError`` catch it; ``str()`` is the plain message (not the
    quoted key ``KeyError`` would show)."""

    def __str__(self) -> str:
        return self.message


class ConfigurationError(EventBusError, ValueError):
    """The bus or a subscription was configured with values that cannot work."""


class SerializationError(EventBusError, TypeError):
    """A payload value cannot be turned into JSON; the message names its path."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class BackpressureError(EventBusError):
    """The bus already holds ``max_pending_events`` unfinished events (policy RAISE)."""

    def __init__(self, message: str, pending: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.pending = pending
        self.limit = limit


class BusClosedError(EventBusError, RuntimeError):
    """The bus was closed or shut down; create a new one to publish again."""


class HandlerError(EventBusError):
    """A handler raised; ``__cause__`` is the original exception."""

    def __init__(self, message: str, handler_name: str = "", event_id: str = "") -> None:
        super().__init__(message)
        self.handler_name = handler_name
        self.event_id = event_id


class HandlerTimeoutError(HandlerError, TimeoutError):
    """A handler did not finish within its timeout (async: cancelled; sync: abandoned)."""


class PublishFailedError(EventBusError):
    """Raised by ``PublishResult.raise_for_errors()`` when a handler failed."""

    def __init__(self, message: str, result: PublishResult) -> None:
        super().__init__(message)
        self.result = result

    @property
    def errors(self) -> list[BaseException]:
        return [r.error for r in self.result.handler_results if r.error is not None]


class MissingExtraError(EventBusError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, feature: str, extra: str, *args: Any) -> None:
        super().__init__(
            f"{feature} needs the optional dependency group {extra!r}: "
            f"pip install 'aperion-event-bus[{extra}]'"
        )
        self.feature = feature
        self.extra = extra
