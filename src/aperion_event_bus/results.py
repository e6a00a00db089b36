"""What a publish produced: one HandlerResult per handler call, gathered in PublishResult."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import PublishFailedError

if TYPE_CHECKING:
    from .events import Event

__all__ = ["HandlerResult", "PublishResult"]


class _HandlerResultSlots:
    """Storage layout shared by HandlerResult and its private fast-construction twin."""

    __slots__ = (
        "attempts",
        "duration",
        "error",
        "handler_name",
        "subscription_id",
        "timed_out",
        "value",
    )


@dataclass(frozen=True, slots=True)
class HandlerResult(_HandlerResultSlots):
    """Outcome of one subscription handling one event (after retries)."""

    subscription_id: str
    handler_name: str
    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    duration: float = 0.0
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


class _FastHandlerResult(_HandlerResultSlots):
    """Same layout as HandlerResult, ordinary attribute assignment: built, then
    re-classed. The frozen dataclass's ``__init__`` calls ``object.__setattr__`` once
    per field (~4x the cost); every awaited publish makes one per handler call."""

    __slots__ = ()

    def __init__(
        self,
        subscription_id: str,
        handler_name: str,
        value: Any,
        error: BaseException | None,
        timed_out: bool,
        duration: float,
        attempts: int,
    ) -> None:
        self.subscription_id = subscription_id
        self.handler_name = handler_name
        self.value = value
        self.error = error
        self.timed_out = timed_out
        self.duration = duration
        self.attempts = attempts
        self.__class__ = HandlerResult  # type: ignore[assignment]


#: Internal constructor, every field positional (hot path): no wrapper call, it
#: returns a HandlerResult.
_handler_result: Callable[
    [str, str, Any, BaseException | None, bool, float, int], HandlerResult
] = _FastHandlerResult  # type: ignore[assignment]


@dataclass(slots=True)
class PublishResult:
    """Result of ``await bus.publish(...)``.

    ``accepted`` is False when backpressure dropped the event (``dropped_reason``
    says why). ``handler_results`` are in the order the handlers finished, which is
    priority order unless the bus runs handlers in parallel.
    """

    event: Event
    accepted: bool = True
    handler_results: list[HandlerResult] = field(default_factory=list)
    dropped_reason: str | None = None

    @property
    def event_id(self) -> str:
        return self.event.event_id

    @property
    def ok(self) -> bool:
        """True when the event was accepted and no handler failed or timed out."""
        return self.accepted and all(r.error is None for r in self.handler_results)

    @property
    def errors(self) -> list[BaseException]:
        return [r.error for r in self.handler_results if r.error is not None]

    @property
    def values(self) -> list[Any]:
        """Return values of the handlers that succeeded, in result order."""
        return [r.value for r in self.handler_results if r.error is None]

    @property
    def timed_out(self) -> Sequence[HandlerResult]:
        return [r for r in self.handler_results if r.timed_out]

    def raise_for_errors(self) -> PublishResult:
        """Raise PublishFailedError (chained to the first error) unless ``ok``; else return self."""
        if not self.accepted:
            raise PublishFailedError(
                f"event {self.event.event_type} {self.event_id} was not accepted: "
                f"{self.dropped_reason}",
                self,
            )
        failed = [r for r in self.handler_results if r.error is not None]
        if failed:
            names = ", ".join(
                f"{r.handler_name} ({'timed out' if r.timed_out else type(r.error).__name__})"
                for r in failed
            )
            raise PublishFailedError(
                f"{len(failed)} handler(s) failed for {self.event.event_type} "
                f"{self.event_id}: {names}",
                self,
            ) from failed[0].error
        return self
