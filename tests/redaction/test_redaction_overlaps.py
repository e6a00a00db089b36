"""Partially overlapping findings: no fragment left in clear, and redaction stays idempotent.

Overlap resolution is leftmost-longest. A finding that starts inside a chosen one but
reaches past it used to be dropped whole, leaving its tail in clear (a leak), which a
second pass then redacted (not idempotent).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest

from aperion_event_bus.redaction import TOKENS, Redactor

R = Redactor()
MASK = Redactor(mode="mask")
PSEUDO = Redactor(mode="pseudonymize", pseudonym_key=b"test-key")
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.abcDEF123_-xyz"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the hypothesis example: the IBAN overlaps the end of the secret value
        ("password=hunter2=DE89 3704 0044 0532 0130 00", "password=[REDACTED] [REDACTED_IBAN]"),
        ("password=hunter2=4111 1111 1111 1111", "password=[REDACTED] [REDACTED_CC]"),
        ("token=abc=4111 1111 1111 1111 ok", "token=[REDACTED] [REDACTED_CC] ok"),
        ("api_key=sk-abc=+44 20 7946 0958", "api_key=[REDACTED] [REDACTED_PHONE]"),
        (
            "password=x=DE89 3704 0044 0532 0130 00 bob@example.com",
            "password=[REDACTED] [REDACTED_IBAN] [REDACTED_EMAIL]",
        ),
        # fully covered findings are simply part of the secret value
        ("secret=x=bob@example.com", "secret=[REDACTED]"),
        ("password=hunter2=123-45-6789", "password=[REDACTED]"),
        # an email glued to a JWT: the JWT's tail past the email is a token of its own
        (f"bob@example.com{JWT}", "[REDACTED_EMAIL].[REDACTED_JWT]"),
        # 1.x: the email found in URL user info overlaps the credentials; the host stays
        (
            "redis://user:pass@ftp.example.com/files",
            "redis://[REDACTED]:[REDACTED]@ftp.example.com/files",
        ),
    ],
)
def test_partial_overlap_leaves_nothing_in_clear(text: str, expected: str) -> None:
    assert R.redact_string(text) == expected
    assert R.redact_string(expected) == expected


@pytest.mark.parametrize(
    "text",
    [
        "password=hunter2=DE89 3704 0044 0532 0130 00",
        "password=hunter2=4111 1111 1111 1111",
        "password=hunter2=4111-1111-1111-1111",
        "api_key=sk-abc=+44 20 7946 0958",
        f"token=x={JWT} bob@example.com",
        "redis://user:pass@ftp.example.com/files",
        "?key=4111 1111 1111 1111",
        "?key=4111-1111-1111-1111",
        "aws_secret_access_key=Basic dXNlcjpwYXNz",
        "authorization=Bearer abcdef123456789012345",
        # a Basic credential glued to "=": not one while a digit follows, nor after redaction
        "Basic dXNlcjpwYXNz=10.0.0.1",
        "EMP-1232001:db8::1",
    ],
)
@pytest.mark.parametrize("redactor", [R, MASK, PSEUDO], ids=["token", "mask", "pseudonymize"])
def test_idempotent_in_every_mode(redactor: Redactor, text: str) -> None:
    once = redactor.redact_string(text)
    assert redactor.redact_string(once) == once


def test_tail_is_reported_and_found() -> None:
    text = "password=hunter2=DE89 3704 0044 0532 0130 00"
    out, report = R.redact_with_report({"line": text})
    assert out == {"line": "password=[REDACTED] [REDACTED_IBAN]"}
    assert report == {"secret": 1, "iban": 1}
    assert R.find(text) == [(9, 21, "secret"), (22, 44, "iban")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # values next to each other in one number run, each as it reads once redacted
        ("(123) 456-7890 4111 1111 1111 1111", "[REDACTED_PHONE] [REDACTED_CC]"),
        ("DE89 3704 0044 0532 0130 00 4111 1111 1111 1111", "[REDACTED_IBAN] [REDACTED_CC]"),
        ("8.8.8.8((123) 456-7890", "[REDACTED_IP]([REDACTED_PHONE]"),
        ("8.8.8.8((4111 1111 1111 1111", "[REDACTED_IP](([REDACTED_CC]"),
    ],
)
def test_adjacent_values_are_all_redacted(text: str, expected: str) -> None:
    assert R.redact_string(text) == expected
    assert R.redact_string(expected) == expected


@pytest.mark.parametrize("token", [*TOKENS.values(), "[EMAIL:3f9a1c]", "[CC:0a1b2c]"])
@pytest.mark.parametrize(
    "context", ["{}", "x {} y", "password={}", "a={}b", "({})", "{}{}", "?key={}", "Bearer {}"]
)
def test_tokens_are_never_detected(token: str, context: str) -> None:
    text = context.replace("{}", token)
    assert R.redact_string(text) == text
    assert PSEUDO.redact_string(text) == text


@pytest.mark.parametrize("masked", ["**** **** **** 1111", "****-****-****-1111"])
@pytest.mark.parametrize("before", ["password=", "?key=", "card "])
def test_masked_cards_are_left_alone(masked: str, before: str) -> None:
    assert MASK.redact_string(before + masked) == before + masked


def _employee_ids(text: str) -> Iterable[tuple[int, int, str]]:
    for m in re.finditer(r"EMP-\d{3}", text):
        yield m.start(), m.end(), "employee_id"


CUSTOM_DETECTOR = Redactor(detectors=[_employee_ids])
CUSTOM_PATTERN = Redactor(patterns={"employee_id": r"EMP-\d{3}"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a number run starting inside an IPv6 address hid the value after it
        ("2001:db8::1(4111 1111 1111 1111", "[REDACTED_IP]([REDACTED_CC]"),
        ("+44 20 7946 0958-2001:db8::1", "[REDACTED_PHONE]-[REDACTED_IP]"),
        ("2001:db8::1 8.8.8.8", "[REDACTED_IP] [REDACTED_IP]"),
        ("2001:db8::1   8.8.8.8", "[REDACTED_IP]   [REDACTED_IP]"),
        # a number run spanning the space after a value hid the IPv4 address in it
        ("(123) 456-7890 8.8.8.8", "[REDACTED_PHONE] [REDACTED_IP]"),
        # a JWT glued to an email, and one glued to other text next to an email
        (f"x bob@example.com{JWT} ok", "x [REDACTED_EMAIL].[REDACTED_JWT] ok"),
        (f"a@b.com id{JWT}", "[REDACTED_EMAIL] id[REDACTED_JWT]"),
        # a JWT glued to a word, with no email in the text
        (f"id_{JWT} rest", "id_[REDACTED_JWT] rest"),
        (f"x{JWT}", "x[REDACTED_JWT]"),
        (f"token{JWT}.", "token[REDACTED_JWT]."),
        # eyJ inside words that are no JWT stays
        ("the keyJar value", "the keyJar value"),
        ("abceyJfoo.eyJbar.baz", "abceyJfoo.eyJbar.baz"),
    ],
)
def test_values_glued_to_a_finding_are_redacted_in_one_pass(text: str, expected: str) -> None:
    assert R.redact_string(text) == expected
    for redactor in (R, MASK, PSEUDO):
        once = redactor.redact_string(text)
        assert redactor.redact_string(once) == once


@pytest.mark.parametrize("redactor", [CUSTOM_DETECTOR, CUSTOM_PATTERN], ids=["detector", "pattern"])
def test_custom_finding_glued_to_an_ipv6_address(redactor: Redactor) -> None:
    text = "EMP-1232001:db8::1"
    once = redactor.redact_string(text)
    assert once == "[REDACTED_EMPLOYEE_ID][REDACTED_IP]"
    assert redactor.redact_string(once) == once
