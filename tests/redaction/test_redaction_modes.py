"""Modes, allow-lists, custom detectors and patterns, the report, configuration errors."""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest

from aperion_event_bus.errors import ConfigurationError, EventBusError
from aperion_event_bus.redaction import (
    TOKENS,
    RedactingProcessor,
    RedactionMode,
    Redactor,
    default_redactor,
    token_for,
)


def test_mask_keeps_last_four_of_cards() -> None:
    r = Redactor(mode="mask")
    assert r.redact_string("card 4111 1111 1111 1111") == "card **** **** **** 1111"
    assert r.redact_string("card 4111111111111111") == "card ************1111"
    assert r.redact_string("a@b.com") == "[REDACTED_EMAIL]"
    assert r.redact_string(r.redact_string("card 4111-1111-1111-1111")) == (
        "card ****-****-****-1111"
    )


def test_pseudonyms_are_stable_keyed_and_joinable() -> None:
    r = Redactor(mode=RedactionMode.PSEUDONYMIZE, pseudonym_key=b"k1")
    one = r.redact_string("user Bob@Example.com")
    two = r.redact_string("user bob@example.com")
    assert one == two
    assert re.fullmatch(r"user \[EMAIL:[0-9a-f]{6}\]", one)
    other_key = Redactor(mode="pseudonymize", pseudonym_key="k2").redact_string("bob@example.com")
    assert other_key != one[5:]
    # the same phone in two formats maps to one pseudonym
    assert r.redact_string("+44 20 7946 0958") == r.redact_string("+442079460958")
    assert r.redact_string("card 4111 1111 1111 1111").startswith("card [CC:")
    # fixed tokens stay fixed
    assert r.redact({"password": "x"}) == {"password": "[REDACTED]"}
    assert r.redact_string("https://u:p@h") == "https://[REDACTED]:[REDACTED]@h"
    assert r.redact_string(one) == one


def test_pseudonymize_needs_key() -> None:
    with pytest.raises(ConfigurationError, match="pseudonym_key"):
        Redactor(mode="pseudonymize")


def test_unknown_mode() -> None:
    with pytest.raises(ConfigurationError, match="token, mask, pseudonymize"):
        Redactor(mode="scramble")
    with pytest.raises(EventBusError):
        Redactor(mode="scramble")


def test_allow_domains_values_patterns() -> None:
    r = Redactor(
        allow_domains=["example.com", "@corp.test"],
        allow_values=["555-0100"],
        allow_patterns=[r"10\.0\.0\.\d+"],
    )
    text = "qa@example.com dev@mail.example.com x@corp.test y@other.org 10.0.0.7 10.1.0.7"
    assert r.redact_string(text) == (
        "qa@example.com dev@mail.example.com x@corp.test [REDACTED_EMAIL] 10.0.0.7 [REDACTED_IP]"
    )
    assert r.redact({"contact_email": "qa@example.com"}) == {"contact_email": "qa@example.com"}


def test_disabled_kinds() -> None:
    r = Redactor(disabled_kinds=["ip"])
    assert r.redact_string("8.8.8.8 a@b.com") == "8.8.8.8 [REDACTED_EMAIL]"


def _employee_ids(text: str) -> Iterable[tuple[int, int, str]]:
    for m in re.finditer(r"\bEMP-\d{5}\b", text):
        yield m.start(), m.end(), "employee_id"


def test_custom_detector_callable() -> None:
    r = Redactor(detectors=[_employee_ids])
    out, report = r.redact_with_report({"note": "EMP-12345 and a@b.com"})
    assert out == {"note": "[REDACTED_EMPLOYEE_ID] and [REDACTED_EMAIL]"}
    assert report == {"employee_id": 1, "email": 1}


def test_bad_custom_spans_ignored() -> None:
    r = Redactor(detectors=[lambda text: [(-1, 3, "x"), (2, 1, "x"), (0, 10_000, "x")]])
    assert r.redact_string("hello") == "hello"


def test_detector_must_be_callable() -> None:
    with pytest.raises(ConfigurationError):
        Redactor(detectors=["nope"])  # type: ignore[list-item]


def test_patterns_mapping_list_and_pairs() -> None:
    assert Redactor(patterns={"order": r"ORD-\d+"}).redact_string("ORD-42") == "[REDACTED_ORDER]"
    assert Redactor(patterns=[r"secret\w+"]).redact_string("x secretABC") == "x [REDACTED]"
    assert Redactor(patterns=[(re.compile(r"tok\d"), "<T>")]).redact_string("tok1") == "<T>"
    # built-in detectors stay on
    assert Redactor(patterns={"order": r"ORD-\d+"}).redact_string("a@b.com") == "[REDACTED_EMAIL]"


def test_invalid_pattern() -> None:
    with pytest.raises(ConfigurationError, match="invalid redaction pattern"):
        Redactor(patterns=["("])


def test_report_counts_per_type() -> None:
    r = Redactor()
    data = {"a": "x@y.com and z@y.com", "password": "p", "b": ["8.8.8.8"], "c": "nothing"}
    out, report = r.redact_with_report(data)
    assert report == {"email": 2, "sensitive_key": 1, "ip": 1}
    assert out["c"] == "nothing"
    _, empty = Redactor(enabled=False).redact_with_report(data)
    assert not empty


def test_tokens_table() -> None:
    assert TOKENS["credit_card"] == "[REDACTED_CC]"
    assert token_for("employee_id") == "[REDACTED_EMPLOYEE_ID]"
    for kind in ("email", "ssn", "phone", "ip", "aws_key", "jwt", "stripe_key", "gitlab_token"):
        assert token_for(kind).startswith("[REDACTED_")


def test_default_redactor_shared_and_read_only() -> None:
    assert default_redactor() is default_redactor()
    with pytest.raises(AttributeError):
        default_redactor().enabled = False  # type: ignore[misc]
    assert RedactingProcessor().redactor is default_redactor()
