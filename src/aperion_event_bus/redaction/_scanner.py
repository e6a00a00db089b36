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
    is_phone_number,
    is_ssn,
    personal_ip,
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

# --- ASCII variants ---------------------------------------------------------------------
# ``\d``, ``\w`` and ``\s`` look every character up in the Unicode database; spelled as
# ASCII ranges they are a bitmap test. On ASCII-only text (``str.isascii()`` is O(1))
# both spellings match exactly the same characters, so the hot patterns get an ASCII
# twin (about a fifth faster), used whenever the text is ASCII.
_ASCII_CLASSES: Final[dict[str, str]] = {
    "\\d": "0-9",
    "\\w": "A-Za-z0-9_",
    # What Python counts as whitespace below 128 (str.isspace): \x1c-\x1f included.
    "\\s": " \\t\\n\\r\\f\\v\\x1c-\\x1f",
}


def _ascii_twin(pattern: str) -> re.Pattern[str]:
    r"""``pattern`` with ``\d``/``\w``/``\s`` spelled as ASCII ranges and ``\uXXXX``
    dropped from classes: the same matches on ASCII text, faster.

    Only the constructs our patterns use are handled; anything else that depends on
    Unicode (``\D``, ``\W``, ``\S``, ``\b``, ``\u`` outside a class) is refused.
    """
    out: list[str] = []
    in_class = False
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            esc = pattern[i : i + 2]
            if esc in _ASCII_CLASSES:
                out.append(_ASCII_CLASSES[esc] if in_class else f"[{_ASCII_CLASSES[esc]}]")
            elif esc == "\\u" and in_class:
                i += 6  # a non-ASCII character never occurs in ASCII text
                continue
            elif esc[1:] in "DWSbBu":
                raise ValueError(f"cannot make an ASCII twin of {esc!r} in {pattern!r}")
            else:
                out.append(esc)
            i += 2
            continue
        if ch == "[" and not in_class:
            if pattern.startswith(("[]", "[^]"), i):
                raise ValueError(
                    f"cannot make an ASCII twin of a class opening with ']': {pattern!r}"
                )
            in_class = True
        elif ch == "]" and in_class:
            in_class = False
        out.append(ch)
        i += 1
    return re.compile("".join(out))


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
            r"|(?i:asic)[ \t]+(?P<basic>[A-Za-z0-9+/]{6,}={0,2})(?![\w+/=\[]))",
        ]
    )
    + ")"
)
_BOUNDARY_ASCII: Final = _ascii_twin(_BOUNDARY.pattern)
_BOUNDARY_CHARS_SET: Final = frozenset(" \t\n\r\f\v\u00a0\u3000()[{}<>:=,;\"'|*/@!?&`")
_JWT_GLUED: Final = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
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
_SEPARATORS: Final = str.maketrans("", "", "().- +")
_DATE_SEPARATORS: Final = frozenset("-./")
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
# The same split by separator, so each scan starts on a literal (``re`` finds a literal
# with a fast search but tests a character class at every position). Used for the
# "is any key secret?" pre-check only; the separators a line has are known already.
_KV_KEY_COLON: Final = re.compile(r":[ \t]*(?:[\"']\\?)?(?P<key>[\w.-]{2,80})")
_KV_KEY_EQUALS: Final = re.compile(r"=[ \t]*(?:[\"']\\?)?(?P<key>[\w.-]{2,80})")
_KV_KEY_COLON_ASCII: Final = _ascii_twin(_KV_KEY_COLON.pattern)
_KV_KEY_EQUALS_ASCII: Final = _ascii_twin(_KV_KEY_EQUALS.pattern)
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
# A card as mode="mask" writes it (``****-****-****-1111``): 8+ stars, separators, last
# digits. Not a secret to redact again (keeps masking idempotent).
_MASK_SHAPE: Final = re.compile(r"(?=(?:[ -]*\*){8})[* -]*[0-9]{0,4}")
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
    """All validated findings in ``text`` (may overlap; the caller resolves overlaps).

    This runs once per log line, so the common outcomes (no boundary match, no secret
    key name) are decided here without further calls.
    """
    found: list[Finding] = []
    # A leading newline gives a token at the very start its boundary; offsets shift by 1.
    padded = "\n" + text
    ascii_only = text.isascii()
    boundary = _BOUNDARY_ASCII if ascii_only else _BOUNDARY
    m = boundary.search(padded)
    if m is not None:
        _scan_boundary(text, padded, boundary, m, found, private_ips)
    # Single-character ``in`` tests are a memchr; the longer markers are only looked
    # for when their first character is present.
    colon = ":" in text
    equals = "=" in text
    percent = "%" in text
    if (
        (colon and "://" in text)
        or (percent and "%3" in text)
        or (equals and ("key=" in text or "sig=" in text))
    ):
        _scan_inline(text, found)
    if "@" in text or (percent and "%40" in text):
        _scan_emails(text, found)
    if "eyJ" in text:
        _scan_glued_jwts(text, found)
    # The gate needs four colons; log timestamps usually have two.
    if colon and ("::" in text or (text.count(":") >= 4 and _IPV6_GATE.search(text) is not None)):
        _scan_ipv6(text, found, private_ips)
    if (equals or colon) and not keys.never_secret:
        # Is any key name in front of a separator secret? Each separator gives the same
        # key to the split patterns as to _KV_KEY (a match never spans a separator).
        reversed_text = text[::-1]
        kv_equals, kv_colon = (
            (_KV_KEY_EQUALS_ASCII, _KV_KEY_COLON_ASCII)
            if ascii_only
            else (_KV_KEY_EQUALS, _KV_KEY_COLON)
        )
        if (equals and keys.any_secret_reversed(kv_equals.findall(reversed_text))) or (
            colon and keys.any_secret_reversed(kv_colon.findall(reversed_text))
        ):
            _scan_key_values(text, reversed_text, keys, found)
    return found


def _scan_boundary(
    text: str,
    padded: str,
    boundary: re.Pattern[str],
    m: re.Match[str] | None,
    found: list[Finding],
    private_ips: bool,
) -> None:
    """Handle ``m``, the first ``boundary`` match in ``padded``, and all later ones.

    A search loop rather than finditer: setting up an iterator costs more than a search.
    """
    search = boundary.search
    while m is not None:
        pos = m.end()
        group = m.lastgroup
        if group == "num":  # by far the most common match: no table look-up
            # Under 7 characters a run has neither 7 digits nor room for an IPv4 address.
            if pos - m.start() > 7:
                _number(text, m.start(group) - 2, m.end(group) - 1, found, private_ips)
        elif group is not None:  # every branch has a group
            resume = _boundary_token(text, m, group, found)
            if resume is not None:
                pos = resume
        m = search(padded, pos)


def _boundary_token(text: str, m: re.Match[str], group: str, found: list[Finding]) -> int | None:
    """Validate and record the token ``m`` matched. Returns where (in the padded text)
    to search on when that is before the end of the match, else None."""
    kind, whole = _GROUPS[group]
    start, end = m.span(group)
    if whole:  # the group starts after the token's first character
        start -= 1
    start -= 1  # the leading newline
    end -= 1
    if kind == "iban":
        stop = _iban(text, start, end, found)
        # The IBAN pattern reads on over what follows ("DE89 ... 00 4111 1111 ..."):
        # search on right after the IBAN, from the boundary character there.
        return None if stop is None else stop + 1
    if whole:
        end = m.end() - 1
    value = text[start:end]
    if kind == "jwt" and not is_jwt(value):
        return None
    if kind == "basic_auth" and not is_basic_credentials(value):
        return None
    if kind == "bearer" and (
        value.startswith("[REDACTED") or (len(value) < 20 and value.isalpha())
    ):
        return None  # "the bearer instrument": prose, not a credential
    found.append((start, end, kind, _TYPED))
    return None


def _scan_inline(text: str, found: list[Finding]) -> None:
    for m in _INLINE.finditer(text):
        group = m.lastgroup
        if group is None:  # pragma: no cover
            continue
        start, end = m.span(group)
        if text.startswith("[REDACTED", start):
            continue
        if text[start] == "*" and (
            not text[start:end].strip("*") or _MASK_SHAPE.fullmatch(text, start, end)
        ):
            continue  # a mask (``?key=****``, a card masked by mode="mask"): keeps idempotence
        found.append((start, end, _GROUPS[group][0], _TYPED))


def _number(text: str, start: int, end: int, found: list[Finding], private_ips: bool) -> None:
    split = text.find("((", start, end)
    if split >= 0:  # no value holds "((": two runs ("8.8.8.8((123) 456-7890")
        stop = split
        while stop > start and not text[stop - 1].isdigit():
            stop -= 1  # a run ends on a digit
        if stop - start >= 7:
            _number(text, start, stop, found, private_ips)
        if end - split > 7:
            _number(text, split + 1, end, found, private_ips)
        return
    if text[start] == "(" and text.find(")", start, end) < 0:
        start += 1  # "(4111 ..." : the parenthesis is punctuation, not an area code
    date = _date_prefix(text, start, end)
    if date is not None:  # "2024-05-01 12" from a log timestamp: look only past the date
        start = date.end() + 1
        if end - start < 6:
            return
    candidate = text[start:end]
    digits = len(candidate.translate(_SEPARATORS))
    dots = candidate.count(".")
    if digits < 7 and dots != 3:
        return  # too few digits for anything but an IPv4 address
    if dots >= 3:  # an IPv4 address inside the run needs three dots
        ip = _IPV4.match(text, start)
        if ip is not None and ip.end() <= end:
            if personal_ip(ip.group(), private_ips):
                found.append((start, ip.end(), "ip", _TYPED))
            rest = ip.end()
            while rest < end and not text[rest].isdigit() and text[rest] not in "+(":
                rest += 1
            if end - rest >= 6:
                _number(text, rest, end, found, private_ips)
            return
    if start and text[start - 1] in "/@":
        return  # URL path segment or handle, not a phone or card
    if digits < 12 and candidate[0] not in "+(0" and not _has_short_shape(candidate, digits):
        return  # no card length, no +/(/trunk prefix and no NANP or SSN shape inside
    _classify_run(text, start, end, found, 0)


def _has_short_shape(candidate: str, digits: int) -> bool:
    """``_SHORT_SHAPES.search(candidate)`` for a number run with ``digits`` digits that
    does not start with "+", "(" or "0" (the caller has handled those).

    The shapes need 9+ digits (SSN, NANP) or a space (the only whitespace a run holds)
    before "(", "+" or "0"; that is checked first, the search is the slow part.
    """
    if digits < 9 and " (" not in candidate and " +" not in candidate and " 0" not in candidate:
        return False
    return _SHORT_SHAPES.search(candidate) is not None


def _date_prefix(text: str, start: int, end: int) -> re.Match[str] | None:
    """``_DATE_PREFIX.match(text, start, end)``, skipped when it cannot match: a date
    has 8+ characters and a separator at offset 1, 2 or 4 (``1-2-2024``, ``2024-01-02``)."""
    if end - start < 8 or _DATE_SEPARATORS.isdisjoint(text[start + 1 : start + 5]):
        return None
    return _DATE_PREFIX.match(text, start, end)


def _iban(text: str, start: int, end: int, found: list[Finding]) -> int | None:
    """Record the IBAN at ``start`` (the candidate runs to ``end``); returns its end."""
    candidate = text[start:end]
    length = iban_length(candidate[:2])
    if length is None:
        return None
    count = 0
    stop = -1
    for i, ch in enumerate(candidate):
        if ch != " ":
            count += 1
            if count == length:
                stop = i + 1
                break
    if stop < 0:
        return None
    stop_at = start + stop
    if stop_at < len(text) and text[stop_at].isalnum():
        return None
    if is_iban(candidate[:stop].replace(" ", "")):
        found.append((start, stop_at, "iban", _TYPED))
        return stop_at
    return None


def _scan_key_values(
    text: str, reversed_text: str, keys: KeyClassifier, found: list[Finding]
) -> None:
    """``key=value`` findings; called once ``scan_text`` saw a secret key name."""
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
        if (
            value.lower() in _NON_SECRET_VALUES
            or _TOKEN_SHAPE.fullmatch(value)
            or (value[0] == "*" and _MASK_SHAPE.fullmatch(value))
        ):
            continue
        kind = "secret"
        if group == "kvv":
            scheme = _AUTH_SCHEMES.get(value.lower())
            if scheme is not None:
                cred = _CREDENTIAL_AFTER_SCHEME.match(text, vend)
                if cred is None or _TOKEN_SHAPE.fullmatch(cred.group(1)):  # ours
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
    # A run holds only digits and "().- +", so deleting those leaves the digits.
    digits = candidate.translate(_SEPARATORS)
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
    date = _date_prefix(text, start, end)
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
                # The chunks dropped on either side may hold a value of their own
                # ("(123) 456-7890 4111 1111 1111 1111"): as they read once redacted.
                if left:
                    _classify_run(text, start, chunks[left - 1][1], found, depth + 1)
                if right:
                    _classify_run(text, chunks[n - right][0], end, found, depth + 1)
                return


def _scan_glued_jwts(text: str, found: list[Finding]) -> None:
    """JWTs glued to the text before them (``id_<jwt>``, ``bob@example.com<jwt>``),
    which the boundary scan does not see as tokens of their own. ``eyJ`` plus a
    header and payload that decode to JSON is specific enough to need no boundary."""
    i = text.find("eyJ", 1)
    while i > 0:
        if text[i - 1] not in _BOUNDARY_CHARS_SET:
            m = _JWT_GLUED.match(text, i)
            if m is not None and is_jwt(m.group()):
                found.append((i, m.end(), "jwt", _TYPED))
                i = m.end() - 1
        i = text.find("eyJ", i + 1)


def _scan_ipv6(text: str, found: list[Finding], private_ips: bool) -> None:
    for m in _IPV6.finditer(text):
        if personal_ip(m.group(0), private_ips):
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
