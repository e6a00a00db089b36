"""Find personal data and secrets in a string: cheap regex candidates, then validation.

CPython's ``re`` skips ahead fast only when a pattern starts with a literal or a
single character class; a mixed alternation is otherwise tried branch by branch
at every position. So the detectors are compiled into three patterns, each with
a cheap entry point:

* ``_BOUNDARY``: one alternation, tried only right after a boundary character
  (space, punctuation, start of text), holding every detector whose value starts
  a token: number-like runs (then classified as card by brand + Luhn, SSN by SSA
  rules, phone by libphonenumber, or IPv4 by ``ipaddress``), IBANs (length +
  mod-97), and prefixed secrets (``AKIA``, ``ghp_``, ``eyJ``, ``-----BEGIN``,
  ``Bearer``...). The named group that matched says which detector it is.
* ``_INLINE``: detectors that start inside a token (``://user:pass@``, its
  percent-encoded form, ``?key=``), run only when their marker is present.
* ``_KV_KEY``: ``key=value`` / ``key: value`` / ``"key": "value"``, found from each
  separator on the reversed text (so it starts on a rare character), the key
  name classified like a dictionary key (``auth_info`` and ``max_tokens`` stay).

Emails are found from each ``@`` (or ``%40``) outwards, IPv6 only when the text
has ``::`` or seven colons. A finding is a ``(start, end, kind, priority)`` tuple.
"""

from __future__ import annotations

import re
from typing import Final

from ._keys import KeyClassifier
from ._validators import (
    iban_length,
    is_basic_credentials,
    is_card_number,
    is_iban,
    is_jwt,
    is_personal_ip,
    is_phone_number,
    is_ssn,
)

__all__ = ["Finding", "scan_text"]

Finding = tuple[int, int, str, int]
"""``(start, end, kind, priority)``; on equal spans the lower priority wins."""

_TYPED: Final = 0
_BY_KEY: Final = 1

# group name -> (kind, whole): the span is the whole match (True) or the group (False).
_GROUPS: Final[dict[str, tuple[str, bool]]] = {
    "num": ("number", True),
    "iban": ("iban", True),
    "pem": ("private_key", True),
    "jwt": ("jwt", True),
    "aws_key": ("aws_key", True),
    "gcp_key": ("gcp_key", True),
    "gh_classic": ("github_token", True),
    "gh_fine": ("github_token", True),
    "gitlab": ("gitlab_token", True),
    "slack": ("slack_token", True),
    "slack_app": ("slack_token", True),
    "slack_hook": ("slack_webhook", True),
    "stripe": ("stripe_key", True),
    "stripe_wh": ("stripe_key", True),
    "api_key": ("api_key", True),
    "aws_arn": ("aws_arn", True),
    "bearer": ("bearer", False),
    "basic": ("basic_auth", False),
    "url_creds": ("url_credentials", False),
    "url_creds_enc": ("url_credentials", False),
    "query": ("secret", False),
}

_TOKEN_CHARS: Final = r"[A-Za-z0-9._~+/=-]"
# Characters after which a token may start. Not ``.``, ``-``, ``+``, ``#``, ``$``, ``\\``
# or word characters: digits after those belong to versions, ids, prices or escapes.
# ``]`` is left out so text glued to one of our tokens is read as it was before redaction
# (keeps redaction idempotent). Whitespace is spelled out (not ``\s``) so the class compiles to a fast bitmap; the
# look-ahead lists every character a token below can start with, so most boundaries
# are rejected before the alternation is tried.
_BOUNDARY_CHARS: Final = r"[ \t\n\r\f\v\u00a0\u3000()\[{}<>:=,;\"'|*/@!?&`]"
_BOUNDARY: Final = re.compile(
    _BOUNDARY_CHARS
    + r"(?=[-+(\dA-Zeghxsprwab])"
    + "(?:"
    + "|".join(
        [
            # Each branch starts with a literal or a class *outside* its group, so the
            # engine can reject it on the first character; whole-match groups
            # therefore start one character after the token (see _scan_boundary).
            r"[+(\d](?P<num>[\d().\- ]{5,40}(?<=\d))(?![\w@\[]|[.\-]\d)",
            r"[A-Z](?P<iban>[A-Z]\d\d(?: ?[A-Z0-9]){10,32})",
            r"-(?P<pem>----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)"
            r"(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z))",
            r"e(?P<jwt>yJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)",
            r"A(?:(?P<aws_key>(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|IPA|NPA|NVA|PKA)[A-Z0-9]{16})"
            r"(?![A-Za-z0-9])|(?P<gcp_key>Iza[0-9A-Za-z_-]{35})(?![\w-]))",
            r"g(?:(?P<gh_classic>h[pousr]_[A-Za-z0-9]{36,251})(?!\w)"
            r"|(?P<gh_fine>ithub_pat_[A-Za-z0-9_]{22,244})(?!\w)"
            r"|(?P<gitlab>l(?:pat|dt|rt|ptt|soat|cbt|imt|ft|agent|oas)-[A-Za-z0-9_-]{20,}))",
            r"x(?:(?P<slack>ox[abposre]-[A-Za-z0-9-]{10,})|(?P<slack_app>app-\d-[A-Za-z0-9-]{10,}))",
            r"h(?P<slack_hook>ttps://hooks\.slack\.com/(?:services|workflows|triggers)/"
            r"[A-Za-z0-9_/-]{8,})",
            r"[spr](?P<stripe>k_(?:live|test)_[A-Za-z0-9]{10,})",
            r"w(?P<stripe_wh>hsec_[A-Za-z0-9]{20,})",
            r"s(?P<api_key>k-(?:[a-z]{2,8}-){0,2}[A-Za-z0-9_-]{20,})",
            r"a(?P<aws_arn>rn:aws[\w-]*:[\w-]+:[\w-]*:\d{12}:[^\s\"',;]+)",
            rf"[Bb](?:(?i:earer)[ \t]+(?P<bearer>{_TOKEN_CHARS}{{8,}})"
            r"|(?i:asic)[ \t]+(?P<basic>[A-Za-z0-9+/]{6,}={0,2})(?![\w+/=]))",
        ]
    )
    + ")"
)
_INLINE: Final = re.compile(
    r"://(?P<url_creds>[^\s:/?#@\"'<>\[\]]*:[^\s/?#\"'<>\[\]]+)@"
    r"|%(?i:3a%2f%2f)(?P<url_creds_enc>[^\s%/?#&@:]*%(?i:3a)[^\s/?#&@:]*?)%40"
    r"|[?&](?:key|sig|api-key|apikey)=(?P<query>[^&\s#\"'<>\[\]]+)"
)

# --- numbers -------------------------------------------------------------------------
_IPV4: Final = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\.?\w|\[)")
_DATE_PREFIX: Final = re.compile(
    r"(?:(?:19|20)\d\d([-./])\d\d?\1\d\d?|\d\d?([-./])\d\d?\2(?:19|20)\d\d)(?!\d)"
)
_NON_DIGIT: Final = re.compile(r"\D+")
_SEPARATORS: Final = str.maketrans("", "", "().- +")
_CHUNK: Final = re.compile(r"\S+")
_SHORT_SHAPES: Final = re.compile(
    r"(?<!\d)(?:\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}|\d{3}[ -]\d{2}[ -]\d{4})(?!\d)|(?:^|\s)[(+0]\d"
)

# --- IPv6 ------------------------------------------------------------------------------
# Without "::" a full IPv6 address has seven colons between hex groups; this literal-led
# pattern is a cheap test for that before the real (look-behind led) scan.
_IPV6_GATE: Final = re.compile(r":[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")
_IPV6: Final = re.compile(
    r"(?<![\w:.%])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{2,39}"
    r"(?:\.\d{1,3}){0,3}(?:%[\w.]+)?(?![\w:\[])"
)

# --- key=value in free text ---------------------------------------------------------------
# Runs on the *reversed* text: starts at a separator (``=`` or ``:``) and reads the key
# name backwards; if the key is secret, ``_KV_VALUE`` reads the value forwards.
_KV_KEY: Final = re.compile(r"[:=][ \t]*(?:[\"']\\?)?(?P<key>[\w.-]{2,80})")
_KV_VALUE: Final = re.compile(
    r">?[ \t]*(?:"
    r"\\\"(?P<kvq2>(?:[^\"\\]|\\[^\"])*)\\\""
    r"|\"(?P<kvq>(?:[^\"\\\n]|\\.)*)\""
    r"|'(?P<kvs>[^'\n]*)'"
    r"|(?P<kvv>[^\s\"',;&{}\[\]()<>\\]+))"
)
_AUTH_SCHEMES: Final[dict[str, str]] = {
    "bearer": "bearer",
    "basic": "basic_auth",
    "token": "secret",
    "digest": "secret",
    "negotiate": "secret",
    "apikey": "secret",
}
_LINE_VALUE_KEYS: Final = frozenset({"cookie", "cookies", "authorization"})
_TOKEN_SHAPE: Final = re.compile(r"\[[A-Z0-9_]+(?::[0-9a-f]{6})?\]|\**")
_NON_SECRET_VALUES: Final = frozenset({"", "null", "none", "true", "false", "nil", "undefined"})
_CREDENTIAL_AFTER_SCHEME: Final = re.compile(r"[ \t]+([^\s\"',;]+)")
_PSEUDONYM_TAIL: Final = re.compile(r"[0-9a-f]{6}\]")
_AWS_SECRET_VALUE: Final = re.compile(r"[A-Za-z0-9/+]{40}")

# --- email ---------------------------------------------------------------------------------
# Not followed by "@" or "[": a domain glued to another address or to one of our tokens.
_EMAIL_DOMAIN: Final = re.compile(r"(?:[^\W_][\w-]{0,62}\.)+(?P<tld>[^\W\d_]{2,63})(?![\w\-@\[])")
_SSH_PATH: Final = re.compile(r":(?:~|/|[\w.-]+/|[\w.-]+\.git\b)")
_LOCAL_PUNCT: Final = frozenset("._%+-'")
_FILE_EXTENSIONS: Final = frozenset({
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "tif", "tiff", "avif",
    "css", "js", "mjs", "ts", "tsx", "jsx", "json", "yaml", "yml", "xml", "html", "htm",
    "txt", "toml", "ini", "cfg", "conf", "lock", "map", "woff", "woff2", "ttf", "otf",
    "mp3", "mp4", "wav", "webm", "gz", "tgz", "tar", "exe", "dll", "scss", "less", "vue",
    "whl", "pyc", "csv", "log", "bak", "tmp", "swp",
})  # fmt: skip
_RETINA: Final = re.compile(r"\d+(?:\.\d+)?x\.", re.IGNORECASE)


def scan_text(text: str, keys: KeyClassifier, *, private_ips: bool = True) -> list[Finding]:
    """All validated findings in ``text`` (may overlap; the caller resolves overlaps)."""
    found: list[Finding] = []
    _scan_boundary(text, found, private_ips)
    if "://" in text or "%3" in text or "key=" in text or "sig=" in text:
        _scan_inline(text, found)
    if "@" in text or "%40" in text:
        _scan_emails(text, found)
    if ":" in text and ("::" in text or _IPV6_GATE.search(text) is not None):
        _scan_ipv6(text, found, private_ips)
    if "=" in text or ":" in text:
        _scan_key_values(text, keys, found)
    return found


def _scan_boundary(text: str, found: list[Finding], private_ips: bool) -> None:
    # A leading newline gives a token at the very start its boundary; offsets shift by 1.
    padded = "\n" + text
    for m in _BOUNDARY.finditer(padded):
        group = m.lastgroup
        if group is None:  # pragma: no cover - every branch has a group
            continue
        kind, whole = _GROUPS[group]
        start, end = m.span(group)
        if whole:  # the group starts after the token's first character
            start -= 1
        start -= 1  # the leading newline
        end -= 1
        if kind == "number":
            _number(text, start, end, found, private_ips)
            continue
        if kind == "iban":
            _iban(text, start, end, found)
            continue
        if whole:
            end = m.end() - 1
        value = text[start:end]
        if kind == "jwt" and not is_jwt(value):
            continue
        if kind == "basic_auth" and not is_basic_credentials(value):
            continue
        if kind == "bearer" and (
            value.startswith("[REDACTED") or (len(value) < 20 and value.isalpha())
        ):
            continue  # "the bearer instrument": prose, not a credential
        found.append((start, end, kind, _TYPED))


def _scan_inline(text: str, found: list[Finding]) -> None:
    for m in _INLINE.finditer(text):
        group = m.lastgroup
        if group is None:  # pragma: no cover
            continue
        start, end = m.span(group)
        if text.startswith("[REDACTED", start):
            continue
        found.append((start, end, _GROUPS[group][0], _TYPED))


def _number(text: str, start: int, end: int, found: list[Finding], private_ips: bool) -> None:
    if text[start] == "(" and ")" not in text[start:end]:
        start += 1  # "(4111 ..." : the parenthesis is punctuation, not an area code
    date = _DATE_PREFIX.match(text, start, end)
    if date is not None:  # "2024-05-01 12" from a log timestamp: look only past the date
        start = date.end() + 1
        if end - start < 6:
            return
    candidate = text[start:end]
    if len(candidate.translate(_SEPARATORS)) < 7 and candidate.count(".") != 3:
        return  # too few digits for anything but an IPv4 address
    ip = _IPV4.match(text, start)
    if ip is not None and ip.end() <= end:
        if is_personal_ip(ip.group(), include_private=private_ips):
            found.append((start, ip.end(), "ip", _TYPED))
        rest = ip.end()
        while rest < end and not text[rest].isdigit() and text[rest] not in "+(":
            rest += 1
        if end - rest >= 6:
            _number(text, rest, end, found, private_ips)
        return
    if start and text[start - 1] in "/@":
        return  # URL path segment or handle, not a phone or card
    if (
        len(candidate.translate(_SEPARATORS)) < 12
        and candidate[0] not in "+(0"
        and _SHORT_SHAPES.search(candidate) is None
    ):
        return  # no card length, no +/(/trunk prefix and no NANP or SSN shape inside
    _classify_run(text, start, end, found, 0)


def _iban(text: str, start: int, end: int, found: list[Finding]) -> None:
    candidate = text[start:end]
    length = iban_length(candidate[:2])
    if length is None:
        return
    count = 0
    stop = -1
    for i, ch in enumerate(candidate):
        if ch != " ":
            count += 1
            if count == length:
                stop = i + 1
                break
    if stop < 0:
        return
    stop_at = start + stop
    if stop_at < len(text) and text[stop_at].isalnum():
        return
    if is_iban(candidate[:stop].replace(" ", "")):
        found.append((start, stop_at, "iban", _TYPED))


def _scan_key_values(text: str, keys: KeyClassifier, found: list[Finding]) -> None:
    reversed_text = text[::-1]
    if not keys.any_secret_reversed(_KV_KEY.findall(reversed_text)):
        return
    is_secret = keys.is_secret
    n = len(text)
    for m in _KV_KEY.finditer(reversed_text):
        key = m.group("key")[::-1]
        if not is_secret(key):
            continue
        sep = n - 1 - m.start()
        key_start = n - m.end("key")
        if key_start and text[key_start - 1] == "[" and _PSEUDONYM_TAIL.match(text, sep + 1):
            continue  # our own pseudonym token, e.g. [EMAIL:3f9a1c]
        vm = _KV_VALUE.match(text, sep + 1)
        if vm is None:
            continue
        group = vm.lastgroup or "kvv"
        vstart, vend = vm.span(group)
        value = text[vstart:vend]
        if value.lower() in _NON_SECRET_VALUES or _TOKEN_SHAPE.fullmatch(value):
            continue
        kind = "secret"
        if group == "kvv":
            scheme = _AUTH_SCHEMES.get(value.lower())
            if scheme is not None:
                cred = _CREDENTIAL_AFTER_SCHEME.match(text, vend)
                if cred is None or cred.group(1).startswith("[REDACTED"):
                    continue
                vstart, vend = cred.span(1)
                kind = scheme
            elif key.lower().rsplit("-", 1)[-1].rsplit("_", 1)[-1] in _LINE_VALUE_KEYS:
                stop = text.find("\n", vend)
                vend = n if stop < 0 else stop
                quote = text.find('"', vstart, vend)
                if quote >= 0:
                    vend = quote
                vend = vstart + len(text[vstart:vend].rstrip())
        if kind == "secret" and "aws" in key.lower() and _AWS_SECRET_VALUE.fullmatch(value):
            kind = "aws_secret"
        found.append((vstart, vend, kind, _BY_KEY))


def _number_kind(candidate: str) -> str | None:
    digits = _NON_DIGIT.sub("", candidate)
    n = len(digits)
    if n < 7:
        return None
    first = candidate[0]
    if (
        12 <= n <= 19
        and first.isdigit()
        and "." not in candidate
        and "(" not in candidate
        and is_card_number(digits)
    ):
        return "credit_card"
    if n == 9 and is_ssn(candidate):
        return "ssn"
    if is_phone_number(candidate, digits):
        return "phone"
    return None


def _classify_run(text: str, start: int, end: int, found: list[Finding], depth: int) -> None:
    """Classify the run ``text[start:end]``; if it is nothing as a whole, try trimming
    space-separated chunks off either end (``+1 415 555 2671 2`` -> the phone)."""
    date = _DATE_PREFIX.match(text, start, end)
    if date is not None:
        start = date.end()
        while start < end and not text[start].isdigit() and text[start] not in "+(":
            start += 1
        if end - start < 7:
            return
    candidate = text[start:end]
    kind = _number_kind(candidate)
    if kind is not None:
        found.append((start, end, kind, _TYPED))
        return
    if " " not in candidate or depth > 2:
        return
    chunks = [(m.start() + start, m.end() + start) for m in _CHUNK.finditer(candidate)]
    n = len(chunks)
    for drop in range(1, min(3, n - 1) + 1):
        for left in range(drop + 1):
            right = drop - left
            s, e = chunks[left][0], chunks[n - 1 - right][1]
            sub_kind = _number_kind(text[s:e])
            if sub_kind is not None:
                found.append((s, e, sub_kind, _TYPED))
                if right:
                    _classify_run(text, chunks[n - right][0], end, found, depth + 1)
                return


def _scan_ipv6(text: str, found: list[Finding], private_ips: bool) -> None:
    for m in _IPV6.finditer(text):
        if is_personal_ip(m.group(0), include_private=private_ips):
            found.append((m.start(), m.end(), "ip", _TYPED))


def _scan_emails(text: str, found: list[Finding]) -> None:
    n = len(text)
    for at in ("@", "%40"):
        i = text.find(at)
        while i >= 0:
            _email_at(text, i, len(at), n, found)
            i = text.find(at, i + 1)


def _email_at(text: str, i: int, at_len: int, n: int, found: list[Finding]) -> None:
    j = i
    limit = max(0, i - 64)
    while j > limit and (text[j - 1].isalnum() or text[j - 1] in _LOCAL_PUNCT):
        j -= 1
    local = text[j:i].upper()
    cut = max(local.rfind("%3A"), local.rfind("%2F"))
    if cut >= 0:
        j += cut + 3
    while j < i and text[j] in "._%+-'":
        j += 1
    if j == i or text[i - 1] == ".":
        return
    m = _EMAIL_DOMAIN.match(text, i + at_len)
    if m is None:
        return
    end = m.end()
    if m.group("tld").lower() in _FILE_EXTENSIONS or _RETINA.match(text, i + at_len):
        return
    if end < n and text[end] == ":" and _SSH_PATH.match(text, end):
        return  # git@github.com:org/repo.git, user@host:/srv/data
    if text[max(0, j - 3) : j] == "://":
        return  # URL user info, not an address
    found.append((j, end, "email", _TYPED))
