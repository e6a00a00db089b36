"""Property tests: idempotence, robustness on arbitrary data, no valid value slips through."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aperion_event_bus.redaction import Redactor
from aperion_event_bus.redaction._scanner import _FILE_EXTENSIONS
from aperion_event_bus.redaction._validators import luhn_ok

R = Redactor()
MASK = Redactor(mode="mask")
PSEUDO = Redactor(mode="pseudonymize", pseudonym_key=b"test-key")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FRAGMENTS = [
    "bob@example.com", "+44 20 7946 0958", "(123) 456-7890", "4111 1111 1111 1111",
    "123-45-6789", "DE89 3704 0044 0532 0130 00", "8.8.8.8", "2001:db8::1",
    "AKIAIOSFODNN7EXAMPLE", "password=hunter2", '"token": "abc"', "Bearer abcdef123456",
    "https://u:p@h/x", "2024-01-15T10:30:00Z", "ORD-2024-000123", "v1.2.3", "user.created",
    "git@github.com:o/r.git", "icon@2x.png", " ", ", ", "=", ":", "\n", "-", "(", ")", "@",
    "[REDACTED]", "[EMAIL:3f9a1c]", "12", "0", "x", "é", "日本",
]  # fmt: skip

mixed_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=12).map(
    "".join
)


@SETTINGS
@given(mixed_text)
def test_idempotent_on_mixed_text(text: str) -> None:
    for redactor in (R, MASK, PSEUDO):
        once = redactor.redact_string(text)
        assert redactor.redact_string(once) == once


@SETTINGS
@given(st.text())
def test_idempotent_and_total_on_arbitrary_text(text: str) -> None:
    once = R.redact_string(text)
    assert R.redact_string(once) == once


keys = st.one_of(
    st.sampled_from(["password", "email", "contact_email", "note", "api_key", "id", "auth_info"]),
    st.text(max_size=8),
    st.integers(),
    st.none(),
)
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.binary(max_size=8),
    mixed_text,
)  # fmt: skip
nested: st.SearchStrategy[Any] = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=4),
        st.frozensets(st.text(max_size=5), max_size=3),
    ),
    max_leaves=20,
)


@SETTINGS
@given(nested)
def test_never_raises_and_is_idempotent_on_nested_data(data: Any) -> None:
    out, report = R.redact_with_report(data)
    assert R.redact(out) == out
    assert all(count > 0 for count in report.values())


def _luhn_complete(brand: tuple[str, int], body: str) -> str:
    prefix, length = brand
    digits = (prefix + body)[: length - 1]
    for check in "0123456789":
        if luhn_ok(digits + check):
            return digits + check
    raise AssertionError("unreachable")


BRANDS = [
    ("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16), ("34", 15),
    ("37", 15), ("6011", 16), ("65", 16), ("3530", 16), ("36", 14), ("62", 16),
]  # fmt: skip
cards = st.builds(
    _luhn_complete,
    st.sampled_from(BRANDS),
    st.text(alphabet=string.digits, min_size=20, max_size=20),
)


@SETTINGS
@given(cards, st.sampled_from(["", " ", "-"]), st.sampled_from(["card ", "cc=", "(", "x: "]))
def test_valid_cards_never_pass(number: str, sep: str, before: str) -> None:
    grouped = sep.join(number[i : i + 4] for i in range(0, len(number), 4)) if sep else number
    out = R.redact_string(f"{before}{grouped} ok")
    assert grouped not in out
    assert number not in out.replace(sep, "") if sep else number not in out


def _iban(country: str, length: int, body: str) -> str:
    bban = body[: length - 4]
    number = int("".join(str(int(ch, 36)) for ch in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def _make_iban(pair: tuple[str, int], body: str) -> str:
    return _iban(pair[0], pair[1], body)


ibans = st.builds(
    _make_iban,
    st.sampled_from([("DE", 22), ("FR", 27), ("ES", 24), ("NL", 18), ("IT", 27), ("BE", 16)]),
    st.text(alphabet=string.digits, min_size=30, max_size=30),
)


@SETTINGS
@given(ibans, st.booleans(), st.sampled_from(["IBAN ", "to ", "iban: ", "("]))
def test_valid_ibans_never_pass(iban: str, grouped: bool, before: str) -> None:
    text = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if grouped else iban
    out = R.redact_string(f"{before}{text} done")
    assert text not in out and iban not in out.replace(" ", "")


label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=10)
tlds = st.text(alphabet=string.ascii_lowercase, min_size=2, max_size=6).filter(
    lambda t: t not in _FILE_EXTENSIONS
)
emails = st.builds(
    lambda local, sep, local2, domain, tld: f"{local}{sep}{local2}@{domain}.{tld}",
    label,
    st.sampled_from(["", ".", "_", "+", "-"]),
    label,
    label.filter(lambda d: not d[0].isdigit()),
    tlds,
)


@SETTINGS
@given(
    emails,
    st.sampled_from(["mail ", "to=", "<", '"', "(", "\n"]),
    st.sampled_from([" ", ">", '"', ")", ".", ""]),
)
def test_valid_emails_never_pass(email: str, before: str, after: str) -> None:
    out = R.redact_string(f"{before}{email}{after}")
    assert email not in out
    assert "[REDACTED_EMAIL]" in out
