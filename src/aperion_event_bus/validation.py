"""Event naming rules (``{domain}.{action}``) and the 1.x EventValidator."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError

__all__ = [
    "EVENT_TYPE_PATTERN",
    "KNOWN_SYSTEM_EVENTS",
    "EventValidator",
    "ValidationResult",
    "extract_action",
    "extract_domain",
    "is_valid_event_type",
]

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
_EVENT_TYPE_RE = re.compile(EVENT_TYPE_PATTERN)
KNOWN_SYSTEM_EVENTS = frozenset(
    {"system.handler_error", "system.startup", "system.shutdown", "system.error"}
)
_FORMAT_HINT = (
    "must follow {domain}.{action}: lowercase letters, digits and '_', at least two "
    "dot-separated segments each starting with a letter (e.g. 'user.created')"
)


def is_valid_event_type(event_type: object) -> bool:
    """True when ``event_type`` follows ``{domain}.{action}``."""
    return isinstance(event_type, str) and _EVENT_TYPE_RE.match(event_type) is not None


def extract_domain(event_type: str) -> str:
    """``"a.b.c" -> "a"`` (the whole string when it has no dot)."""
    return event_type.partition(".")[0]


def extract_action(event_type: str) -> str | None:
    """``"a.b.c" -> "b.c"``; None when there is no dot."""
    _, dot, tail = event_type.partition(".")
    return tail if dot else None


@dataclass
class ValidationResult:
    """Outcome of a validation: ``valid`` with ``errors`` and ``warnings`` lists."""

    valid: bool
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.valid

    def __bool__(self) -> bool:
        return self.valid

    def merge(self, other: ValidationResult) -> ValidationResult:
        return ValidationResult(
            self.valid and other.valid, self.errors + other.errors, self.warnings + other.warnings
        )


class EventValidator:
    """Checks event types, payloads and sources.

    Lenient (default): problems are reported in the returned ValidationResult.
    Strict: the first error raises ``ValidationError``.
    """

    def __init__(
        self,
        strict: bool = False,
        allowed_domains: Iterable[str] | None = None,
        require_source: bool = False,
        custom_pattern: str | re.Pattern[str] | None = None,
    ) -> None:
        self.strict = strict
        self.allowed_domains = frozenset(allowed_domains) if allowed_domains is not None else None
        self.require_source = require_source
        if custom_pattern is None:
            self._pattern = _EVENT_TYPE_RE
        elif isinstance(custom_pattern, re.Pattern):
            self._pattern = custom_pattern
        else:
            self._pattern = re.compile(custom_pattern)
        self.custom_pattern = custom_pattern

    def _finish(self, result: ValidationResult, event_type: str | None) -> ValidationResult:
        if self.strict and result.errors:
            raise ValidationError("; ".join(result.errors), event_type)
        return result

    def validate_event_type(self, event_type: Any) -> ValidationResult:
        """Check the ``{domain}.{action}`` format, allowed domains and reserved names."""
        return self._finish(self._check_type(event_type), _name(event_type))

    def _check_type(self, event_type: Any) -> ValidationResult:
        errors: list[str] = []
        warnings: list[str] = []
        if not isinstance(event_type, str) or not event_type:
            errors.append("event_type must be a non-empty string")
        elif not self._pattern.match(event_type):
            hint = _FORMAT_HINT if self.custom_pattern is None else (
                f"must follow {{domain}}.{{action}} and match {self._pattern.pattern!r}"
            )
            errors.append(f"Invalid event type {event_type!r}: {hint}")
        else:
            domain = extract_domain(event_type)
            if self.allowed_domains is not None and domain not in self.allowed_domains:
                errors.append(
                    f"Event type {event_type!r} has domain {domain!r}, which is not one of "
                    f"the allowed domains {sorted(self.allowed_domains)}"
                )
            if domain == "system" and event_type not in KNOWN_SYSTEM_EVENTS:
                warnings.append(
                    f"{event_type!r} uses the reserved 'system' domain but is not a known "
                    f"system event ({', '.join(sorted(KNOWN_SYSTEM_EVENTS))})"
                )
        return ValidationResult(not errors, errors, warnings)

    def validate_payload(
        self, payload: Any, required_fields: Iterable[str] | None = None
    ) -> ValidationResult:
        """Check that the payload is a dict holding every required field."""
        return self._finish(self._check_payload(payload, required_fields), None)

    def _check_payload(
        self, payload: Any, required_fields: Iterable[str] | None
    ) -> ValidationResult:
        errors: list[str] = []
        if not isinstance(payload, Mapping):
            errors.append("payload must be a dict")
        elif required_fields:
            missing = [f for f in required_fields if f not in payload]
            if missing:
                errors.append(f"payload is missing required field(s): {', '.join(missing)}")
        return ValidationResult(not errors, errors)

    def validate_source(self, source: Any) -> ValidationResult:
        """Check the source (required when ``require_source``)."""
        return self._finish(self._check_source(source), None)

    def _check_source(self, source: Any) -> ValidationResult:
        errors: list[str] = []
        if source is None:
            if self.require_source:
                errors.append("source is required: pass source='your-component'")
        elif not isinstance(source, str) or not source.strip():
            errors.append("source must be a non-empty string when given")
        return ValidationResult(not errors, errors)

    def validate(
        self,
        event_type: Any,
        payload: Any = None,
        source: Any = None,
        required_fields: Iterable[str] | None = None,
    ) -> ValidationResult:
        """Validate type, payload (when given) and source together."""
        result = self._check_type(event_type)
        if payload is not None or required_fields:
            result = result.merge(self._check_payload(payload, required_fields))
        result = result.merge(self._check_source(source))
        return self._finish(result, _name(event_type))


def _name(event_type: Any) -> str | None:
    return event_type if isinstance(event_type, str) else None
