"""The ``Redactor``: replaces personal data and secrets in strings and nested data.

It keeps the 1.x surface (``Redactor(enabled, patterns, redact_keys)``,
``redact_string``, ``redact``) and adds modes, allow-lists, custom detectors and
a per-type report. Detection lives in ``_scanner`` (text) and ``_keys`` (key
names); this module decides what to do with each finding and walks structures.

A ``Redactor`` is immutable after construction and safe to share between
threads; its only internal state is a bounded cache of key verdicts.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any, Final, TypeVar, cast

from ..errors import ConfigurationError
from ._keys import KeyClass, KeyClassifier
from ._scanner import Finding, scan_text
from ._tokens import FIXED_KINDS, KEY_TOKEN, label_for, token_for

__all__ = ["Detector", "PatternsArg", "RedactionMode", "Redactor"]

T = TypeVar("T")

Detector = Callable[[str], Iterable[tuple[int, int, str]]]
"""A custom detector: takes the text, yields ``(start, end, kind)`` spans to redact."""

PatternLike = str | re.Pattern[str]
PatternsArg = Mapping[str, PatternLike] | Iterable[PatternLike | tuple[PatternLike, str]]
"""1.x ``patterns``: ``{name: regex}`` (token ``[REDACTED_NAME]``), a list of regexes
(token ``[REDACTED]``), or a list of ``(regex, replacement)`` pairs."""


class RedactionMode(StrEnum):
    """How a detected value is replaced."""

    TOKEN = "token"
    """Typed token such as ``[REDACTED_EMAIL]`` (default, 1.x behaviour)."""
    MASK = "mask"
    """Cards keep their last four digits (``**** **** **** 1111``); other types get tokens."""
    PSEUDONYMIZE = "pseudonymize"
    """Keyed HMAC-SHA256 pseudonym such as ``[EMAIL:3f9a1c]``: stable, joinable, not reversible."""


_SCALARS: Final = frozenset({int, float, bool, type(None), bytes, complex, bytearray})
_TOKEN_SHAPE: Final = re.compile(r"\[[A-Z0-9_]+(?::[0-9a-f]{6})?\]")
_HIDDEN_SCALARS: Final = (bool, type(None))
_CUSTOM_PRIORITY: Final = -1
_MAX_KEY_CACHE: Final = 8192
# Re-scans after a partial overlap (see Redactor._rescan); one is almost always enough.
_MAX_RESCANS: Final = 3
_DEPTH_TOKEN: Final = "[REDACTED_DEPTH]"
_CYCLE_TOKEN: Final = "[CYCLE]"


def _compile(pattern: PatternLike) -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        return pattern
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigurationError(
            f"invalid redaction pattern {pattern!r}: {exc}; pass a valid regular expression"
        ) from exc


def _parse_patterns(
    patterns: PatternsArg | None,
) -> tuple[tuple[tuple[re.Pattern[str], str], ...], dict[str, str]]:
    """-> ((compiled, kind), ...), {kind: fixed replacement}."""
    if patterns is None:
        return (), {}
    compiled: list[tuple[re.Pattern[str], str]] = []
    fixed: dict[str, str] = {}
    if isinstance(patterns, Mapping):
        for name, pattern in patterns.items():
            kind = str(name).lower()
            compiled.append((_compile(pattern), kind))
        return tuple(compiled), fixed
    for i, item in enumerate(patterns):
        if isinstance(item, tuple):
            pattern, replacement = item
            kind = f"custom_{i}"
            fixed[kind] = replacement
        else:
            pattern, kind = item, "custom"
            fixed[kind] = KEY_TOKEN
        compiled.append((_compile(pattern), kind))
    return tuple(compiled), fixed


def _mask_card(value: str) -> str:
    total = sum(ch.isdigit() for ch in value)
    seen = 0
    out = []
    for ch in value:
        if ch.isdigit():
            seen += 1
            out.append(ch if seen > total - 4 else "*")
        else:
            out.append(ch)
    return "".join(out)


def _normalise(kind: str, value: str) -> str:
    """Canonical form hashed for pseudonyms, so formatting does not change the pseudonym."""
    if kind in ("phone", "credit_card", "ssn"):
        return "".join(ch for ch in value if ch.isdigit())
    if kind == "iban":
        return value.replace(" ", "").upper()
    if kind == "email":
        return value.replace("%40", "@").lower()
    return value


# Re-scan after redacting a value unless every value is "free standing": the scanners
# look at the characters around a value (look-arounds, the local part of an email, number
# runs that span spaces, a match that starts inside the value and reads on past it), so
# text glued to a value may read differently once the value is a token
# ("2001:db8::1(4111 1111 1111 1111": the number run starting inside the IPv6 address
# hid the card). A value between whitespace or quotes, or after "=", reads the same
# either way, unless a space separates it from a number run (or from more spaces).
_SAFE_BEFORE: Final = frozenset(" \t\n\r=\"'<")
_SAFE_AFTER: Final = frozenset(" \t\n\r\"',;>")
_GLUE_BEFORE_SPACE: Final = frozenset("0123456789) ")
_GLUE_AFTER_SPACE: Final = frozenset("0123456789+( ")


class Redactor:
    """Replace personal data and secrets in strings and nested structures.

    ``Redactor(enabled=True, patterns=None, redact_keys=None)`` is the 1.x
    constructor; everything else is keyword-only:

    * ``patterns``: extra regexes, added to the built-in detectors (see ``PatternsArg``).
    * ``redact_keys``: extra sensitive key names, added to the defaults and matched
      case-insensitively inside compound names, like the defaults.
    * ``mode``: ``"token"`` (default), ``"mask"`` or ``"pseudonymize"`` (needs
      ``pseudonym_key``).
    * ``allow_domains`` / ``allow_values`` / ``allow_patterns``: findings that are
      left alone (email domains incl. subdomains, exact values, full-match regexes).
    * ``detectors``: custom callables ``text -> [(start, end, kind), ...]``.
    * ``disabled_kinds``: built-in kinds to switch off (e.g. ``{"ip"}``).
    * ``redact_private_ips``: private/link-local addresses count as personal (default).
    * ``default_keys``: use the built-in sensitive key names (default ``True``).
    """

    __slots__ = (
        "_allow_domains",
        "_allow_patterns",
        "_allow_values",
        "_detectors",
        "_disabled",
        "_enabled",
        "_fast_path",
        "_filtering",
        "_fixed",
        "_key_cache",
        "_keys",
        "_mode",
        "_patterns",
        "_plain_tokens",
        "_private_ips",
        "_pseudonym_key",
    )

    def __init__(
        self,
        enabled: bool = True,
        patterns: PatternsArg | None = None,
        redact_keys: Iterable[str] | None = None,
        *,
        mode: RedactionMode | str = RedactionMode.TOKEN,
        pseudonym_key: bytes | str | None = None,
        allow_domains: Iterable[str] = (),
        allow_values: Iterable[str] = (),
        allow_patterns: Iterable[PatternLike] = (),
        detectors: Iterable[Detector] = (),
        disabled_kinds: Iterable[str] = (),
        redact_private_ips: bool = True,
        default_keys: bool = True,
    ) -> None:
        try:
            self._mode = RedactionMode(mode)
        except ValueError:
            choices = ", ".join(m.value for m in RedactionMode)
            raise ConfigurationError(
                f"unknown redaction mode {mode!r}; use one of: {choices}"
            ) from None
        if isinstance(pseudonym_key, str):
            pseudonym_key = pseudonym_key.encode()
        if self._mode is RedactionMode.PSEUDONYMIZE and not pseudonym_key:
            raise ConfigurationError(
                "mode='pseudonymize' needs a secret pseudonym_key (bytes or str); "
                "keep it out of the logs and stable to keep pseudonyms joinable"
            )
        if isinstance(redact_keys, str):
            redact_keys = [redact_keys]
        self._enabled = bool(enabled)
        self._pseudonym_key = pseudonym_key or b""
        self._patterns, self._fixed = _parse_patterns(patterns)
        self._keys = KeyClassifier(redact_keys or (), use_defaults=default_keys)
        self._allow_domains = tuple(d.lower().lstrip("@.") for d in allow_domains if d.strip("@. "))
        self._allow_values = frozenset(allow_values)
        self._allow_patterns = tuple(_compile(p) for p in allow_patterns)
        self._detectors = tuple(detectors)
        for det in self._detectors:
            if not callable(det):
                raise ConfigurationError(
                    f"detector {det!r} is not callable; pass a function text -> [(start, end, kind)]"
                )
        self._disabled = frozenset(k.lower() for k in disabled_kinds)
        self._private_ips = redact_private_ips
        self._fast_path = not self._patterns and not self._detectors
        # Every finding becomes token_for(kind): what _render does in this case.
        self._plain_tokens = self._mode is RedactionMode.TOKEN and not self._fixed
        self._filtering = bool(
            self._disabled or self._allow_domains or self._allow_values or self._allow_patterns
        )
        self._key_cache: dict[str, tuple[KeyClass, str, tuple[str, ...]]] = {}

    # -- read-only configuration ---------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """False turns the redactor into a no-op (1.x)."""
        return self._enabled

    @property
    def mode(self) -> RedactionMode:
        """The replacement mode."""
        return self._mode

    def __repr__(self) -> str:
        return f"Redactor(enabled={self._enabled}, mode={self._mode.value!r})"

    # -- public API ----------------------------------------------------------------------
    def redact_string(self, text: str) -> str:
        """``text`` with every detected value replaced (1.x)."""
        if not self._enabled or type(text) is not str:
            return text
        return self._text(text, None)

    def redact(self, data: T) -> T:
        """A redacted copy of ``data`` (recursive); the input is never mutated (1.x).

        Dicts, lists, tuples, sets, dataclasses and pydantic models are walked;
        strings are scanned; values under sensitive keys are replaced whole.
        Other objects are returned as they are.
        """
        if not self._enabled:
            return data
        return cast(T, self._value(data, Counter(), 0, set()))

    def redact_with_report(self, data: T) -> tuple[T, Counter[str]]:
        """Like :meth:`redact`, plus how many values of each kind were replaced.

        Kinds are the names in ``_tokens.TOKENS`` (``email``, ``credit_card``, ...),
        ``sensitive_key`` for values under sensitive keys, or a custom kind.
        """
        counts: Counter[str] = Counter()
        if not self._enabled:
            return data, counts
        return cast(T, self._value(data, counts, 0, set())), counts

    def is_sensitive_key(self, key: object) -> bool:
        """True when a value under ``key`` is replaced whole by ``[REDACTED]``."""
        return isinstance(key, str) and self._keys.is_secret(key)

    def redact_field(self, key: object, value: Any) -> Any:
        """``value`` redacted as if it sat under ``key`` in a dict (used for log ``extra``)."""
        if not self._enabled:
            return value
        return self._item(key, value, Counter(), 0, set())[1]

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """The spans :meth:`redact_string` would replace, as ``(start, end, kind)``."""
        return [(s, e, k) for s, e, k, _ in self._findings(text)[0]]

    # -- strings -------------------------------------------------------------------------
    def _findings(self, text: str) -> tuple[list[Finding], bool]:
        """The findings to replace, and whether one was dropped by a partial overlap."""
        found = scan_text(text, self._keys, private_ips=self._private_ips)
        if self._fast_path:
            if not found:
                return found, False
            if len(found) == 1 and not self._filtering:
                return found, False
        return self._resolve(text, found)

    def _resolve(self, text: str, found: list[Finding]) -> tuple[list[Finding], bool]:
        """Add custom matches, drop allowed ones and pick non-overlapping findings.

        Leftmost-longest: a finding inside an earlier chosen one is dropped. A finding
        that starts inside a chosen one but reaches past it (a partial overlap) keeps
        its tail, from the next letter or digit on, so no fragment of a card, IBAN,
        phone or key is left in clear (``password=hunter2=DE89 3704 0044 0532 0130 00``
        -> ``password=[REDACTED] [REDACTED_IBAN]``). Emails are the exception: their
        tail is the domain, not personal on its own, and an email overlapping a
        finding is URL user info (``redis://user:pass@host``: the host stays).

        The second value is True after a partial overlap; ``_text`` then re-scans its
        output until it is a fixpoint.
        """
        for pattern, kind in self._patterns:
            for m in pattern.finditer(text):
                if m.end() > m.start():
                    found.append((m.start(), m.end(), kind, _CUSTOM_PRIORITY))
        n = len(text)
        for det in self._detectors:
            for start, end, kind in det(text):
                if 0 <= start < end <= n:
                    found.append((start, end, kind, _CUSTOM_PRIORITY))
        if not found:
            return found, False
        if self._filtering:
            found = [f for f in found if not self._allowed(f[2], text[f[0] : f[1]])]
        found.sort(key=lambda f: (f[0], -f[1], f[3]))
        chosen: list[Finding] = []
        last_end = 0
        partial = False
        for f in found:
            start, end = f[0], f[1]
            if start < last_end:
                if end <= last_end:
                    continue
                partial = True
                if f[2] == "email":
                    continue
                start = last_end
                while start < end and not text[start].isalnum():
                    start += 1
                if start == end:
                    continue
                f = (start, end, f[2], f[3])
            chosen.append(f)
            last_end = end
        return chosen, partial

    def _allowed(self, kind: str, value: str) -> bool:
        if kind in self._disabled:
            return True
        if value in self._allow_values:
            return True
        if self._allow_domains and kind == "email":
            domain = value.replace("%40", "@").rsplit("@", 1)[-1].lower()
            for allowed in self._allow_domains:
                if domain == allowed or domain.endswith("." + allowed):
                    return True
        return any(p.fullmatch(value) for p in self._allow_patterns)

    def _text(self, text: str, counts: Counter[str] | None, rescan: bool = True) -> str:
        """``text`` redacted; after a partial overlap (``rescan``) a fixpoint."""
        partial = False
        if self._fast_path:  # _findings inlined: this is the hot path for log lines
            if len(text) < 5 or text.isalpha():
                return text
            findings = scan_text(text, self._keys, private_ips=self._private_ips)
            if not findings:
                return text
            if len(findings) > 1 or self._filtering:
                findings, partial = self._resolve(text, findings)
                if not findings:
                    return text
        else:
            findings, partial = self._findings(text)
            if not findings:
                return text
        out: list[str] = []
        pos = 0
        plain = self._plain_tokens
        # Custom patterns and detectors may read anything around a value: always re-scan.
        check = rescan and not partial
        if check and not self._fast_path:
            partial, check = True, False
        n = len(text)
        for start, end, kind, _ in findings:
            out.append(text[pos:start])
            out.append(token_for(kind) if plain else self._render(kind, text[start:end]))
            if counts is not None:
                counts[kind] += 1
            if check:  # _glued inlined for the common cases (a value between spaces)
                if start:
                    ch = text[start - 1]
                    if ch not in _SAFE_BEFORE or (
                        ch == " " and start > 1 and text[start - 2] in _GLUE_BEFORE_SPACE
                    ):
                        partial, check = True, False
                if end < n and check:
                    ch = text[end]
                    if ch not in _SAFE_AFTER or (
                        ch == " " and end + 1 < n and text[end + 1] in _GLUE_AFTER_SPACE
                    ):
                        partial, check = True, False
            pos = end
        out.append(text[pos:])
        if partial and rescan:
            return self._rescan("".join(out), counts)
        return "".join(out)

    def _rescan(self, text: str, counts: Counter[str] | None) -> str:
        """Redact ``text`` again until nothing changes (at most ``_MAX_RESCANS`` rounds).

        Only called after a partial overlap, where the text around the tokens differs
        from what the first pass read. The tokens themselves are never detected, so
        each round only touches clear text, and stopping at an unchanged text makes
        the result a fixpoint: redacting it again changes nothing.
        """
        for _ in range(_MAX_RESCANS):
            again = self._text(text, counts, rescan=False)
            if again == text:
                break
            text = again
        return text

    def _render(self, kind: str, value: str) -> str:
        fixed = self._fixed.get(kind)
        if fixed is not None:
            return fixed
        if kind in FIXED_KINDS:
            return token_for(kind)
        if self._mode is RedactionMode.TOKEN:
            return token_for(kind)
        if self._mode is RedactionMode.MASK:
            return _mask_card(value) if kind == "credit_card" else token_for(kind)
        digest = hmac.new(
            self._pseudonym_key, f"{kind}:{_normalise(kind, value)}".encode(), hashlib.sha256
        ).hexdigest()
        return f"[{label_for(kind)}:{digest[:6]}]"

    # -- structures ----------------------------------------------------------------------
    def _key(self, key: str, counts: Counter[str]) -> tuple[KeyClass, str]:
        entry = self._key_cache.get(key)
        if entry is None:
            verdict = self._keys.classify(key)
            key_counts: Counter[str] = Counter()
            new_key = self._text(key, key_counts)
            entry = (verdict, new_key, tuple(key_counts.elements()))
            if len(self._key_cache) >= _MAX_KEY_CACHE:
                self._key_cache.clear()
            self._key_cache[key] = entry
        if entry[2]:
            counts.update(entry[2])
        return entry[0], entry[1]

    def _item(
        self, key: object, value: Any, counts: Counter[str], depth: int, active: set[int]
    ) -> tuple[object, Any]:
        if type(key) is not str:
            if isinstance(key, str):
                key = str(key)
            else:
                return key, self._value(value, counts, depth, active)
        verdict, new_key = self._key(key, counts)
        if verdict.secret:
            if isinstance(value, _HIDDEN_SCALARS):
                return new_key, value
            counts["sensitive_key"] += 1
            return new_key, KEY_TOKEN
        if verdict.pii_kind is not None:
            return new_key, self._pii_value(value, verdict.pii_kind, counts, depth, active)
        if type(value) is str:
            return new_key, self._text(value, counts)
        return new_key, self._value(value, counts, depth, active)

    def _pii_value(
        self, value: Any, kind: str, counts: Counter[str], depth: int, active: set[int]
    ) -> Any:
        """Value under a compound PII key (``contact_email``): value detection first,
        then the key as a hint for values detection cannot recognise."""
        if isinstance(value, str):
            out = self._text(value, counts)
            if out != value or kind == "ip" or not value.strip():
                return out
            if _TOKEN_SHAPE.search(value) or kind in self._disabled:
                return value
            if self._allowed(kind, value):
                return value
            counts[kind] += 1
            return self._render(kind, value)
        if isinstance(value, int) and not isinstance(value, bool) and kind != "ip":
            counts[kind] += 1
            return self._render(kind, str(value))
        return self._value(value, counts, depth, active)

    def _value(self, obj: Any, counts: Counter[str], depth: int, active: set[int]) -> Any:
        t = type(obj)
        if t is str:
            return self._text(obj, counts)
        if t in _SCALARS:
            return obj
        if depth >= 64:
            return _DEPTH_TOKEN
        oid = id(obj)
        if oid in active:
            return _CYCLE_TOKEN
        active.add(oid)
        try:
            return self._container(obj, t, counts, depth + 1, active)
        finally:
            active.discard(oid)

    def _container(
        self, obj: Any, t: type, counts: Counter[str], depth: int, active: set[int]
    ) -> Any:
        if t is dict:
            out: dict[object, Any] = {}
            for k, v in obj.items():
                nk, nv = self._item(k, v, counts, depth, active)
                out[nk] = nv
            return out
        if t is list:
            return [self._value(v, counts, depth, active) for v in obj]
        if t is tuple:
            return tuple(self._value(v, counts, depth, active) for v in obj)
        if isinstance(obj, str):
            return self._text(str(obj), counts)
        if isinstance(obj, dict):
            items = [self._item(k, v, counts, depth, active) for k, v in obj.items()]
            try:
                new = copy.copy(obj)
                new.clear()
                new.update(items)
                return new
            except Exception:
                return dict(items)
        if isinstance(obj, Mapping):
            return dict(self._item(k, v, counts, depth, active) for k, v in obj.items())
        if isinstance(obj, (list, set, frozenset)):
            values = [self._value(v, counts, depth, active) for v in obj]
            try:
                return t(values)
            except Exception:
                return list(values) if isinstance(obj, list) else set(values)
        if isinstance(obj, tuple):
            values = [self._value(v, counts, depth, active) for v in obj]
            if hasattr(obj, "_fields"):
                try:
                    return t(*values)
                except Exception:
                    return tuple(values)
            return tuple(values)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return self._dataclass(obj, counts, depth, active)
        if hasattr(t, "model_fields") and hasattr(obj, "model_copy"):
            return self._pydantic(obj, counts, depth, active)
        return obj

    def _dataclass(self, obj: Any, counts: Counter[str], depth: int, active: set[int]) -> Any:
        fields = dataclasses.fields(obj)
        values = {
            f.name: self._item(f.name, getattr(obj, f.name, None), counts, depth, active)[1]
            for f in fields
        }
        try:
            new = dataclasses.replace(obj, **{f.name: values[f.name] for f in fields if f.init})
            for f in fields:
                if not f.init:
                    object.__setattr__(new, f.name, values[f.name])
            return new
        except Exception:
            return values

    def _pydantic(self, obj: Any, counts: Counter[str], depth: int, active: set[int]) -> Any:
        names = list(type(obj).model_fields)
        update = {
            name: self._item(name, getattr(obj, name, None), counts, depth, active)[1]
            for name in names
        }
        extra = getattr(obj, "__pydantic_extra__", None)
        if isinstance(extra, dict):
            for k, v in extra.items():
                update[k] = self._item(k, v, counts, depth, active)[1]
        try:
            return obj.model_copy(update=update)
        except Exception:
            return update
