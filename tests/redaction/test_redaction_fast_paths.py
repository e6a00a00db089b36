"""The shortcuts taken for speed give the same answers as the slow path they skip.

Each test pins one equivalence the scanner relies on: ASCII twins of the hot patterns,
the key=value pre-check split by separator, cheap gates in front of regexes, the Luhn
fast path, and that non-ASCII text (which takes the Unicode patterns) is still redacted.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aperion_event_bus.redaction import Redactor
from aperion_event_bus.redaction import _scanner as sc
from aperion_event_bus.redaction._validators import luhn_ok

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ASCII text rich in the characters the patterns care about, control characters included
# (\x1c-\x1f are whitespace to Python, the spelled-out \s of the twins must agree).
ascii_text = st.text(
    alphabet=st.sampled_from(string.printable + "\x1c\x1d\x1e\x1f\x00\x7f0123456789 .-()+:=@"),
    max_size=120,
)
FRAGMENTS = [
    "AKIAIOSFODNN7EXAMPLE", "ghp_" + "a" * 36, "github_pat_" + "B" * 30, "glpat-" + "x" * 20,
    "xoxb-1234567890-abc", "xapp-1-ABCDEFGHIJ12", "https://hooks.slack.com/services/T0/B0/XXXXXXXX",
    "sk_live_abcdefghijkl", "whsec_" + "z" * 20, "sk-proj-" + "q" * 24, "arn:aws:iam::123456789012:user/bob",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "Bearer abcdef123456", "BASIC dXNlcjpwYXNz",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "DE89 3704 0044 0532 0130 00",
    "4111 1111 1111 1111", "+44 20 7946 0958", "(123) 456-7890", "123-45-6789", "10.0.0.1", " ", "\t", "\x1c",
    "=", ":", '"', "'", "\\", "password", "token", "2024-05-01 12:00:00",
]  # fmt: skip
mixed_ascii = st.lists(st.one_of(st.sampled_from(FRAGMENTS), ascii_text), max_size=8).map("".join)


def _matches(pattern: re.Pattern[str], text: str) -> list[tuple[int, int, str | None]]:
    return [(m.start(), m.end(), m.lastgroup) for m in pattern.finditer(text)]


@SETTINGS
@given(mixed_ascii)
def test_ascii_twins_match_like_the_unicode_patterns(text: str) -> None:
    padded = "\n" + text
    assert _matches(sc._BOUNDARY_ASCII, padded) == _matches(sc._BOUNDARY, padded)
    assert sc._KV_KEY_COLON_ASCII.findall(text) == sc._KV_KEY_COLON.findall(text)
    assert sc._KV_KEY_EQUALS_ASCII.findall(text) == sc._KV_KEY_EQUALS.findall(text)


def test_ascii_twin_spells_out_unicode_classes() -> None:
    twin = sc._BOUNDARY_ASCII.pattern
    for escape in ("\\d", "\\w", "\\s", "\\u"):
        assert escape not in twin
    assert sc._ascii_twin(r"[\d.]\w+\s").pattern == r"[0-9.][A-Za-z0-9_]+[ \t\n\r\f\v\x1c-\x1f]"


@pytest.mark.parametrize("pattern", [r"\W", r"\D+", r"x\b", r"\S", r"\u00e9", r"[]a]", r"[^]a]"])
def test_ascii_twin_refuses_what_it_cannot_translate(pattern: str) -> None:
    with pytest.raises(ValueError):
        sc._ascii_twin(pattern)


@SETTINGS
@given(st.text(max_size=80) | mixed_ascii)
def test_split_key_pre_check_sees_the_same_keys(text: str) -> None:
    reversed_text = text[::-1]
    split = sc._KV_KEY_COLON.findall(reversed_text) + sc._KV_KEY_EQUALS.findall(reversed_text)
    assert Counter(split) == Counter(sc._KV_KEY.findall(reversed_text))


number_runs = st.text(alphabet="0123456789().- +", min_size=1, max_size=41)


@SETTINGS
@given(number_runs)
def test_short_shape_gate_never_hides_a_shape(candidate: str) -> None:
    assume(candidate[0] not in "+(0")  # _number only asks about such runs
    digits = len(candidate.translate(sc._SEPARATORS))
    expected = sc._SHORT_SHAPES.search(candidate) is not None
    assert sc._has_short_shape(candidate, digits) is expected


@SETTINGS
@given(st.text(alphabet="0123456789-./ ", max_size=20), st.integers(0, 5))
def test_date_prefix_gate_never_hides_a_date(text: str, start: int) -> None:
    start = min(start, len(text))
    expected = sc._DATE_PREFIX.match(text, start, len(text))
    got = sc._date_prefix(text, start, len(text))
    assert (got and got.span()) == (expected and expected.span())


def _luhn_reference(digits: str) -> bool:
    total = 0
    parity = len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@SETTINGS
@given(st.text(alphabet="0123456789", max_size=25) | st.text(alphabet="0123456789٣٤", max_size=20))
def test_luhn_fast_path_agrees_with_the_digit_loop(digits: str) -> None:
    assert luhn_ok(digits) is _luhn_reference(digits)


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("café 4111 1111 1111 1111 payé", "[REDACTED_CC]"),
        ("appel +44 20 7946 0958 reçu", "[REDACTED_PHONE]"),
        ("hôte 8.8.8.8 ok", "[REDACTED_IP]"),
        ("clé AKIAIOSFODNN7EXAMPLE ok", "[REDACTED_AWS_KEY]"),
        ("mot de passe: password=hunter2 ✓", "[REDACTED]"),
        ("口座 DE89 3704 0044 0532 0130 00", "[REDACTED_IBAN]"),
    ],
)
def test_non_ascii_lines_take_the_unicode_patterns(text: str, token: str) -> None:
    assert token in Redactor().redact_string(text)


def test_number_runs_too_short_for_any_detector_are_skipped() -> None:
    # 6 characters: neither 7 digits nor room for an IPv4 address; 7 can hold one.
    r = Redactor()
    assert r.redact_string("took 123456 ms") == "took 123456 ms"
    assert r.redact_string("from 8.8.8.8 now") == "from [REDACTED_IP] now"


def test_key_names_without_defaults_are_never_secret() -> None:
    r = Redactor(default_keys=False)
    assert r.redact_string("password=hunter2") == "password=hunter2"
    extra = Redactor(default_keys=False, redact_keys=["pin_code"])
    assert extra.redact_string("pin_code=1234") == "pin_code=[REDACTED]"
