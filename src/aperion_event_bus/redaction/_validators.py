"""Checks that turn a cheap regex candidate into a confirmed detection.

Every function here takes the candidate text and answers "is this really an X?".
They are the reason the redactor does not flag order ids, timestamps or version
strings: a digit run is a card only if it passes Luhn *and* a brand prefix, an
IBAN only if its length fits its country and mod-97 holds, and so on.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from functools import lru_cache
from typing import Final

import phonenumbers

__all__ = [
    "is_basic_credentials",
    "is_card_number",
    "is_iban",
    "is_jwt",
    "is_personal_ip",
    "is_phone_number",
    "is_ssn",
    "luhn_ok",
    "personal_ip",
]


# Luhn doubles every second digit from the right: d -> 2d, minus 9 above 9.
_LUHN_DOUBLE: Final = str.maketrans("0123456789", "0246813579")


def luhn_ok(digits: str) -> bool:
    """Luhn (mod 10) checksum over a string of ASCII digits."""
    if digits.isascii():  # the byte sums run in C
        kept = digits[-1::-2].encode()
        doubled = digits[-2::-2].translate(_LUHN_DOUBLE).encode()
        return (sum(kept) + sum(doubled) - 48 * len(digits)) % 10 == 0
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


def _card_brand_ok(d: str) -> bool:
    """True when the digits start with a known issuer prefix and have its length."""
    n = len(d)
    p2 = int(d[:2])
    p3 = int(d[:3])
    p4 = int(d[:4])
    p6 = int(d[:6])
    if d[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if 2200 <= p4 <= 2204:  # Mir
        return 16 <= n <= 19
    if d.startswith("6011") or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925:
        return 16 <= n <= 19  # Discover
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if 300 <= p3 <= 305 or p3 == 309 or p2 in (36, 38, 39):  # Diners Club
        return 14 <= n <= 19
    if p2 == 62 or p2 == 50 or 56 <= p2 <= 69:  # UnionPay, Maestro
        return 12 <= n <= 19
    return False


def is_card_number(digits: str) -> bool:
    """A payment card number: 12-19 digits, a known brand prefix and a valid Luhn digit."""
    return 12 <= len(digits) <= 19 and _card_brand_ok(digits) and luhn_ok(digits)


_SSN_SHAPE: Final = re.compile(r"(\d{3})([- ])(\d{2})\2(\d{4})")
_SSN_ADVERTISED: Final = frozenset({"078051120", "219099999"})


def is_ssn(text: str) -> bool:
    """US SSN in ``AAA-GG-SSSS`` form with the SSA area, group and serial rules."""
    m = _SSN_SHAPE.fullmatch(text)
    if m is None:
        return False
    area, group, serial = m.group(1), m.group(3), m.group(4)
    if area == "000" or area == "666" or area[0] == "9":
        return False
    if group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_ADVERTISED


# Country code -> IBAN length (SWIFT IBAN registry).
_IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_length(country: str) -> int | None:
    """Registered IBAN length for a two-letter country code, or None."""
    return _IBAN_LENGTHS.get(country)


def is_iban(compact: str) -> bool:
    """An IBAN without spaces: registered country, exact length and mod-97 == 1."""
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def _is_netmask(value: int, bits: int) -> bool:
    """Contiguous leading ones (255.255.255.0) or trailing ones (0.0.0.255)."""
    full = (1 << bits) - 1
    inverted = full ^ value
    return (inverted & (inverted + 1)) == 0 or (value & (value + 1)) == 0


# (network, prefix length) as integers, for the IPv4 fast path.
def _v4(net: str) -> tuple[int, int]:
    addr, bits = net.split("/")
    return int(ipaddress.IPv4Address(addr)), int(bits)


_V4_NOT_PERSONAL: Final = tuple(
    _v4(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4")
)
_V4_PRIVATE: Final = tuple(
    _v4(n)
    for n in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
        "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    )
)  # fmt: skip


def _in(value: int, nets: tuple[tuple[int, int], ...]) -> bool:
    return any(value >> (32 - bits) == net >> (32 - bits) for net, bits in nets)


def _is_personal_ipv4(text: str, include_private: bool) -> bool | None:
    parts = text.split(".")
    if len(parts) != 4:
        return None
    try:
        a, b, c, d = (int(p) for p in parts)
    except ValueError:
        return None
    if a > 255 or b > 255 or c > 255 or d > 255 or not text.isascii():
        return False
    value = (a << 24) | (b << 16) | (c << 8) | d
    if _in(value, _V4_NOT_PERSONAL) or _is_netmask(value, 32):
        return False
    if _in(value, _V4_PRIVATE):
        return include_private
    return True


def is_personal_ip(text: str, *, include_private: bool = True) -> bool:
    """An address that can identify a host or person.

    Loopback, unspecified, broadcast, multicast, reserved addresses and netmasks
    are not personal data. Private ranges (RFC 1918, link-local, shared and
    documentation ranges, IPv6 ULA) count unless ``include_private`` is off.
    """
    return personal_ip(text, include_private)


@lru_cache(maxsize=4096)
def personal_ip(text: str, include_private: bool) -> bool:
    """:func:`is_personal_ip` with positional arguments (a cheaper cache key, hot path)."""
    fast = _is_personal_ipv4(text, include_private)
    if fast is not None:
        return fast
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return personal_ip(str(ip.ipv4_mapped), include_private)
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return False
    if _is_netmask(int(ip), ip.max_prefixlen):
        return False
    if ip.is_private or ip.is_link_local:
        return include_private
    return True


def _b64url_json(part: str) -> object:
    padded = part + "=" * (-len(part) % 4)
    raw = base64.urlsafe_b64decode(padded)
    return json.loads(raw)


def is_jwt(text: str) -> bool:
    """Three dot-separated base64url parts whose header and payload decode to JSON."""
    parts = text.split(".")
    if len(parts) != 3:
        return False
    try:
        header = _b64url_json(parts[0])
        _b64url_json(parts[1])
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict)


def is_basic_credentials(value: str) -> bool:
    """Base64 that decodes to printable ``user:password`` text."""
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        decoded = raw.decode("utf-8")
    except (ValueError, binascii.Error):
        return False
    return ":" in decoded and decoded.isprintable()


_NANP_SHAPE: Final = re.compile(r"(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}")
_DATE_SHAPE: Final = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}")
_CONTAINS_DATE: Final = re.compile(
    r"(?<!\d)(?:\d{1,2}([./-])\d{1,2}\1(?:19|20)\d\d|(?:19|20)\d\d([./-])\d{1,2}\2\d{1,2})(?!\d)"
)
_TRUNK_REGIONS: Final = ("GB", "DE", "FR", "IN")


@lru_cache(maxsize=4096)
def _valid(text: str, region: str | None) -> bool:
    """libphonenumber's verdict (~20 us per call, so recent answers are cached)."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(number))


def is_phone_number(text: str, digits: str) -> bool:
    """Phone number in international or US/UK/DE/FR/IN national notation.

    International numbers (``+`` or ``00``) must be valid per libphonenumber.
    National numbers need the conventions people actually write: a NANP shape
    such as ``(415) 555-2671`` or ``415.555.2671`` (accepted when it has the
    right length, so the classic ``(123) 456-7890`` counts), or a trunk ``0``
    followed by a number valid in GB, DE, FR or IN. Bare digit runs without a
    ``+``, trunk prefix or separators are left alone: they are usually ids or
    epoch timestamps, and dates like ``01.02.2024`` are never phones.
    """
    n = len(digits)
    if n < 7 or n > 15:
        return False
    first = text[0]
    if first == "+":
        return _valid(text, None)
    if digits.startswith("00"):
        return n > 8 and _valid("+" + digits[2:], None)
    if _DATE_SHAPE.fullmatch(text) or _CONTAINS_DATE.search(text):
        return False
    if _NANP_SHAPE.fullmatch(text):
        return True
    if digits[0] == "0" and n >= 9:
        return any(_valid(text, region) for region in _TRUNK_REGIONS)
    return False
