"""Key-based redaction and recursion through structured data."""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict, namedtuple
from typing import Any

import pytest
from pydantic import BaseModel

from aperion_event_bus.redaction import Redactor


@pytest.fixture(scope="module")
def r() -> Redactor:
    return Redactor()


@pytest.mark.parametrize(
    "key",
    [
        "password", "PASSWORD", "db_password", "userPassword", "X-Api-Key", "api_key", "apiKey",
        "client_secret", "refresh-token", "access_token", "authorization", "Authorization",
        "cookie", "Set-Cookie", "session_id", "sessionId", "secret", "private_key", "auth",
        "email", "phone", "ssn", "credit_card", "passwd", "aws_secret_access_key", "Passwort",
        "contraseña", "jwt", "pin", "cvv",
    ],
)  # fmt: skip
def test_sensitive_keys_fully_replaced(r: Redactor, key: str) -> None:
    assert r.redact({key: "value 123"}) == {key: "[REDACTED]"}


@pytest.mark.parametrize(
    "key",
    [
        "auth_info", "author", "max_tokens", "prompt_tokens", "token_count", "token_type",
        "email_verified", "email_subject", "phone_type", "keyboard", "monkey", "key", "tokenizer",
        "password_policy", "secretary", "user_id", "name",
    ],
)  # fmt: skip
def test_ordinary_keys_kept(r: Redactor, key: str) -> None:
    assert r.redact({key: "plain"}) == {key: "plain"}


def test_contact_email_read_by_value_detection(r: Redactor) -> None:
    out = r.redact({"contact_email": "bob@example.com", "home_phone": "+44 20 7946 0958"})
    assert out == {"contact_email": "[REDACTED_EMAIL]", "home_phone": "[REDACTED_PHONE]"}


def test_compound_pii_key_is_a_hint(r: Redactor) -> None:
    out = r.redact({"contact_email": "bob at example dot com", "billing_email": ""})
    assert out == {"contact_email": "[REDACTED_EMAIL]", "billing_email": ""}


def test_api_compat_example(r: Redactor) -> None:
    data = {
        "user": {"email": "a@b.com", "password": "x", "auth_info": "public"},
        "note": "call (123) 456-7890",
    }
    out = r.redact(data)
    assert out == {
        "user": {"email": "[REDACTED]", "password": "[REDACTED]", "auth_info": "public"},
        "note": "call [REDACTED_PHONE]",
    }


def test_none_and_bool_under_secret_key_kept(r: Redactor) -> None:
    assert r.redact({"password": None, "token": True, "secret": 0}) == {
        "password": None,
        "token": True,
        "secret": "[REDACTED]",
    }


def test_nested_values_under_secret_key_replaced(r: Redactor) -> None:
    assert r.redact({"credentials": {"user": "a", "pw": "b"}}) == {"credentials": "[REDACTED]"}


def test_non_string_keys(r: Redactor) -> None:
    data: dict[Any, Any] = {1: "a@b.com", (1, 2): "x", None: "y", 2.5: {"password": "z"}}
    assert r.redact(data) == {
        1: "[REDACTED_EMAIL]",
        (1, 2): "x",
        None: "y",
        2.5: {"password": "[REDACTED]"},
    }


def test_keys_themselves_are_scanned(r: Redactor) -> None:
    out, report = r.redact_with_report({"bob@example.com": 1})
    assert out == {"[REDACTED_EMAIL]": 1}
    assert report["email"] == 1


def test_containers_and_no_mutation(r: Redactor) -> None:
    data = {
        "list": ["a@b.com", 1, None],
        "tuple": ("a@b.com", 2.5),
        "set": {"a@b.com"},
        "frozen": frozenset({"x"}),
        "ordered": OrderedDict(password="p"),
        "bytes": b"a@b.com",
    }
    before = copy.deepcopy(data)
    out = r.redact(data)
    assert data == before
    assert out["list"] == ["[REDACTED_EMAIL]", 1, None]
    assert out["tuple"] == ("[REDACTED_EMAIL]", 2.5)
    assert out["set"] == {"[REDACTED_EMAIL]"}
    assert out["frozen"] == frozenset({"x"})
    assert isinstance(out["ordered"], OrderedDict) and out["ordered"]["password"] == "[REDACTED]"
    assert out["bytes"] == b"a@b.com"
    assert out is not data and out["list"] is not data["list"]


def test_namedtuple_kept(r: Redactor) -> None:
    Point = namedtuple("Point", "label value")
    assert r.redact(Point("a@b.com", 1)) == Point("[REDACTED_EMAIL]", 1)


@dataclasses.dataclass(frozen=True)
class Login:
    user: str
    password: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def test_dataclass(r: Redactor) -> None:
    obj = Login("a@b.com", "hunter2", {"api_key": "k"})
    out = r.redact(obj)
    assert isinstance(out, Login)
    assert out == Login("[REDACTED_EMAIL]", "[REDACTED]", {"api_key": "[REDACTED]"})
    assert obj.password == "hunter2"


class Customer(BaseModel):
    name: str
    email: str
    token: str
    notes: list[str] = []


def test_pydantic_model(r: Redactor) -> None:
    obj = Customer(name="Ann", email="ann@example.com", token="t0k", notes=["ip 8.8.8.8"])
    out = r.redact(obj)
    assert isinstance(out, Customer)
    assert out.email == "[REDACTED]"
    assert out.token == "[REDACTED]"
    assert out.notes == ["ip [REDACTED_IP]"]
    assert obj.token == "t0k"


def test_cycles_and_depth_do_not_crash(r: Redactor) -> None:
    loop: list[Any] = ["a@b.com"]
    loop.append(loop)
    out = r.redact(loop)
    assert out[0] == "[REDACTED_EMAIL]" and out[1] == "[CYCLE]"
    deep: Any = "a@b.com"
    for _ in range(200):
        deep = [deep]
    r.redact(deep)  # must not raise RecursionError


def test_unknown_objects_returned_as_is(r: Redactor) -> None:
    marker = object()
    assert r.redact({"x": marker})["x"] is marker


def test_redact_keys_adds_to_defaults() -> None:
    r = Redactor(redact_keys=["customer_ref", "Internal-Note"])
    out = r.redact({"customerRef": "c1", "internal_note": "n", "password": "p", "ok": "v"})
    assert out == {
        "customerRef": "[REDACTED]",
        "internal_note": "[REDACTED]",
        "password": "[REDACTED]",
        "ok": "v",
    }


def test_default_keys_can_be_switched_off() -> None:
    r = Redactor(default_keys=False, redact_keys=["only_this"])
    assert r.redact({"password": "p", "only_this": "x"}) == {
        "password": "p",
        "only_this": "[REDACTED]",
    }


def test_disabled_redactor_is_noop() -> None:
    r = Redactor(enabled=False)
    data = {"password": "x", "note": "a@b.com"}
    assert r.redact(data) is data
    assert r.redact_string("a@b.com") == "a@b.com"
    assert r.enabled is False


def test_is_sensitive_key(r: Redactor) -> None:
    assert r.is_sensitive_key("db_password")
    assert not r.is_sensitive_key("auth_info")
    assert not r.is_sensitive_key(3)


def test_redact_field(r: Redactor) -> None:
    assert r.redact_field("api_key", "abc") == "[REDACTED]"
    assert r.redact_field("note", "a@b.com") == "[REDACTED_EMAIL]"
