"""Event-type patterns: exact names and ``*`` wildcards.

* ``*`` alone matches every event type;
* a trailing ``*`` (``user.*``) matches one or more segments: ``user.created``,
  ``user.profile.updated`` (not ``user`` itself);
* a leading ``*`` (``*.created``) matches one or more leading segments;
* a ``*`` between dots (``user.*.updated``) matches exactly one segment.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["Matcher", "compile_pattern", "is_pattern", "validate_pattern"]

Matcher = Callable[[str], bool]
_SEGMENT = r"[^.]+"
_SEGMENTS = r"[^.]+(?:\.[^.]+)*"


def is_pattern(pattern: str) -> bool:
    """True when ``pattern`` contains a wildcard."""
    return "*" in pattern


def validate_pattern(pattern: object) -> str:
    """Return ``pattern`` or raise ValueError explaining the accepted forms."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("an event pattern must be a non-empty string such as 'user.created'")
    if pattern == "*":
        return pattern
    for segment in pattern.split("."):
        if not segment:
            raise ValueError(f"event pattern {pattern!r} has an empty segment")
        if "*" in segment and segment != "*":
            raise ValueError(
                f"event pattern {pattern!r}: '*' must stand alone between dots "
                "(e.g. 'user.*', '*.created', 'user.*.updated')"
            )
    return pattern


def compile_pattern(pattern: str) -> Matcher:
    """Return a predicate ``f(event_type) -> bool`` for ``pattern`` (see module doc)."""
    validate_pattern(pattern)
    if pattern == "*":
        return _match_all
    if "*" not in pattern:
        return pattern.__eq__
    segments = pattern.split(".")
    parts = []
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg != "*":
            parts.append(re.escape(seg))
        elif i == 0 or i == last:
            parts.append(_SEGMENTS)
        else:
            parts.append(_SEGMENT)
    regex = re.compile(r"\.".join(parts))
    fullmatch = regex.fullmatch
    return lambda event_type: fullmatch(event_type) is not None


def _match_all(event_type: str) -> bool:
    return True
