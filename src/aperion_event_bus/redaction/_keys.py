"""Classify dictionary keys (and ``key=value`` names in text) as secret, PII or neither.

A key is split into lower-case words (``X-Api-Key`` -> ``x api key``,
``userPassword`` -> ``user password``) and matched against word lists, so
compound names are caught without substring accidents (``max_tokens``,
``author``, ``auth_info`` and ``token_count`` are not secrets).

Two kinds of sensitive keys exist, following the 1.x contract:

* secret keys (password, token, api_key, ...), matched anywhere inside a
  compound name, and the exact PII names (``email``, ``phone``, ``ssn``,
  ``credit_card``): the whole value becomes ``[REDACTED]``;
* compound PII names such as ``contact_email`` or ``mobile_phone``: the value is
  redacted by value detection, so it reads ``[REDACTED_EMAIL]``; when detection
  finds nothing the name is taken as a hint and the value still becomes that
  typed token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, NamedTuple

__all__ = ["KeyClass", "KeyClassifier", "split_words"]

_UNICODE_WORD: Final = re.compile(r"[^\W\d_]+|\d+")
_WORD: Final = re.compile(r"[A-Z]{2,}(?=[A-Z][a-z]|[^A-Za-z]|$)|[A-Z]?[a-z]+|[A-Z]+|\d+")

_SECRET_WORDS: Final = frozenset({
    "password", "passwd", "passphrase", "pwd", "pass", "secret", "secrets", "token",
    "apikey", "authorization", "cookie", "cookies", "credential", "credentials",
    "sessionid", "privatekey", "accesskey", "secretkey", "jwt", "bearer", "pin",
    "cvv", "cvc", "cvv2", "otp", "signature", "passcode", "authtoken", "accesstoken",
    "refreshtoken", "idtoken", "csrftoken", "xsrftoken", "clientsecret", "dsn",
    # other languages
    "passwort", "kennwort", "passe", "motdepasse", "contraseña", "contrasena", "senha",
    "parola", "wachtwoord", "hasło", "haslo", "lösenord", "пароль", "密码", "パスワード",
    "비밀번호",
})  # fmt: skip
_SECRET_SUBSTRINGS: Final = ("password", "passwd", "passphrase", "apikey", "privatekey")
_SECRET_SUFFIXES: Final = ("secret", "token", "apikey", "sessionid")
_KEY_QUALIFIERS: Final = frozenset({
    "api", "access", "private", "secret", "encryption", "signing", "master", "client",
    "session", "account", "storage", "license", "app", "subscription", "consumer",
})  # fmt: skip
_HARMLESS_LAST: Final = frozenset({
    "count", "counts", "type", "kind", "length", "len", "limit", "limits", "usage",
    "ttl", "expiry", "expires", "expire", "expiration", "exp", "at", "in", "url", "uri",
    "endpoint", "path", "file", "name", "names", "policy", "required", "enabled",
    "disabled", "present", "exists", "strength", "algorithm", "alg", "format",
    "version", "method", "provider", "info", "source", "field", "fields", "set",
    "status", "min", "max", "rotated", "changed", "updated", "created",
})  # fmt: skip
_EXACT_PII: Final = frozenset({
    ("email",), ("e", "mail"), ("email", "address"), ("emailaddress",), ("phone",),
    ("phone", "number"), ("phonenumber",), ("ssn",), ("credit", "card"),
    ("creditcard",), ("credit", "card", "number"), ("card", "number"), ("cc", "number"),
    ("ccnumber",), ("iban",),
})  # fmt: skip
# word-suffix -> kind, for compound PII names ("contact_email", "home_phone").
_PII_SUFFIXES: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("email",), "email"),
    (("email", "address"), "email"),
    (("emailaddress",), "email"),
    (("phone",), "phone"),
    (("phone", "number"), "phone"),
    (("phonenumber",), "phone"),
    (("mobile",), "phone"),
    (("telephone",), "phone"),
    (("msisdn",), "phone"),
    (("ssn",), "ssn"),
    (("credit", "card"), "credit_card"),
    (("creditcard",), "credit_card"),
    (("card", "number"), "credit_card"),
    (("iban",), "iban"),
    (("ip",), "ip"),
    (("ip", "address"), "ip"),
    (("ip", "addr"), "ip"),
    (("ipaddress",), "ip"),
)


class KeyClass(NamedTuple):
    """Verdict for one key: ``secret`` -> ``[REDACTED]``; ``pii_kind`` -> typed token."""

    secret: bool
    pii_kind: str | None


NOT_SENSITIVE: Final = KeyClass(False, None)
SECRET: Final = KeyClass(True, None)


def split_words(key: str) -> tuple[str, ...]:
    """``X-Api-Key`` -> ``("x", "api", "key")``; ``userPassword`` -> ``("user", "password")``."""
    if key.isascii():
        return tuple(w.lower() for w in _WORD.findall(key))
    return tuple(_UNICODE_WORD.findall(key.lower()))


def _is_secret_words(words: tuple[str, ...]) -> bool:
    if not words:
        return False
    if words[-1] in _HARMLESS_LAST and len(words) > 1:
        return False
    if words == ("auth",) or words == ("session",) or words[-1] == "auth":
        return True
    for i, w in enumerate(words):
        if w in _SECRET_WORDS:
            return True
        if w == "key" and i > 0 and words[i - 1] in _KEY_QUALIFIERS:
            return True
        if w == "id" and i > 0 and words[i - 1] == "session":
            return True
        if any(s in w for s in _SECRET_SUBSTRINGS) or (len(w) > 6 and w.endswith(_SECRET_SUFFIXES)):
            return True
    return False


def _pii_kind(words: tuple[str, ...]) -> str | None:
    for suffix, kind in _PII_SUFFIXES:
        if words[-len(suffix) :] == suffix:
            return kind
    return None


class KeyClassifier:
    """Classifies keys, with a bounded per-instance cache (keys repeat a lot)."""

    __slots__ = (
        "_cache",
        "_extra",
        "_harmless_reversed",
        "_use_defaults",
        "never_secret",
    )

    _MAX_CACHE: Final = 8192

    def __init__(self, extra_keys: Iterable[str] = (), *, use_defaults: bool = True) -> None:
        self._extra = tuple(
            k for k in ("".join(split_words(key)) or key.lower() for key in extra_keys) if k
        )
        self._use_defaults = use_defaults
        self._cache: dict[str, KeyClass] = {}
        self._harmless_reversed: set[str] = set()
        #: No key is secret at all (no default names, no extra names).
        self.never_secret: bool = not use_defaults and not self._extra

    def classify(self, key: str) -> KeyClass:
        """Verdict for ``key`` (cached)."""
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = self._classify(key)
            if len(self._cache) >= self._MAX_CACHE:
                self._cache.clear()
            self._cache[key] = verdict
        return verdict

    def is_secret(self, key: str) -> bool:
        """True when a value under ``key`` is replaced by ``[REDACTED]`` whole."""
        return self.classify(key).secret

    def any_secret_reversed(self, reversed_keys: list[str]) -> bool:
        """True if any of the keys, each given reversed (as read from reversed text), is secret.

        A hot path for ``key=value`` scanning: the reversed names already known to be
        harmless are kept in a set, so the usual answer (none is secret) is one C call.
        """
        harmless = self._harmless_reversed
        if harmless.issuperset(reversed_keys):
            return False
        for rkey in reversed_keys:
            if rkey in harmless:
                continue
            if self.classify(rkey[::-1]).secret:
                return True
            if len(harmless) >= self._MAX_CACHE:
                harmless.clear()
            harmless.add(rkey)
        return False

    def _classify(self, key: str) -> KeyClass:
        words = split_words(key)
        if self._extra:
            joined = "".join(words) or key.lower()
            if any(extra in joined for extra in self._extra):
                return SECRET
        if not self._use_defaults or not words:
            return NOT_SENSITIVE
        if words in _EXACT_PII or _is_secret_words(words):
            return SECRET
        kind = _pii_kind(words)
        if kind is not None:
            return KeyClass(False, kind)
        return NOT_SENSITIVE
