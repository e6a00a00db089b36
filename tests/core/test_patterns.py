"""Pattern matching agrees with a naive reference matcher."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aperion_event_bus.patterns import compile_pattern, validate_pattern


def reference_match(pattern: str, event_type: str) -> bool:
    """Segment-by-segment matcher written independently of the regex compiler."""
    if pattern == "*":
        return True
    p = pattern.split(".")
    t = event_type.split(".")

    def rec(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(t)
        if p[i] == "*":
            edge = i == 0 or i == len(p) - 1
            if not edge:
                return j < len(t) and rec(i + 1, j + 1)
            return any(rec(i + 1, k) for k in range(j + 1, len(t) + 1))
        return j < len(t) and p[i] == t[j] and rec(i + 1, j + 1)

    return rec(0, 0)


segment = st.sampled_from(["user", "order", "created", "a", "b", "x_1"])
event_types = st.lists(segment, min_size=1, max_size=5).map(".".join)
patterns = st.one_of(
    st.just("*"),
    st.lists(segment | st.just("*"), min_size=1, max_size=4)
    .filter(lambda parts: parts != ["*"])
    .map(".".join),
)


@given(pattern=patterns, event_type=event_types)
def test_matches_reference(pattern: str, event_type: str) -> None:
    assert compile_pattern(pattern)(event_type) == reference_match(pattern, event_type)


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("user.created", "user.created", True),
        ("user.created", "user.created.v2", False),
        ("*", "anything.at.all", True),
        ("user.*", "user.created", True),
        ("user.*", "user.profile.updated", True),
        ("user.*", "user", False),
        ("user.*", "users.created", False),
        ("*.created", "user.created", True),
        ("*.created", "a.b.created", True),
        ("*.created", "created", False),
        ("user.*.updated", "user.profile.updated", True),
        ("user.*.updated", "user.a.b.updated", False),
    ],
)
def test_documented_examples(pattern: str, event_type: str, expected: bool) -> None:
    assert compile_pattern(pattern)(event_type) is expected


@pytest.mark.parametrize("bad", ["", "user..created", "us*er.created", "user.cre*"])
def test_bad_patterns_rejected_with_explanation(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_pattern(bad)
