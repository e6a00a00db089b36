"""A structlog processor that redacts the event dict (structlog itself is optional).

Processors are plain callables ``(logger, method_name, event_dict) -> event_dict``;
this one returns a redacted copy, treating keys like any dictionary keys
(``password=...`` -> ``[REDACTED]``) and scanning string values. Put it after
``structlog.processors.format_exc_info`` (so tracebacks are text by then) and
before the renderer.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from ._default import default_redactor
from .redactor import Redactor

__all__ = ["RedactingProcessor", "redact_event_dict"]


class RedactingProcessor:
    """``RedactingProcessor(redactor=None)``: a structlog processor using ``redactor``."""

    __slots__ = ("redactor",)

    def __init__(self, redactor: Redactor | None = None) -> None:
        self.redactor = redactor if redactor is not None else default_redactor()

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        return self.redactor.redact(dict(event_dict))

    def __repr__(self) -> str:
        return f"RedactingProcessor({self.redactor!r})"


def redact_event_dict(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor using the shared default redactor."""
    return default_redactor().redact(dict(event_dict))
