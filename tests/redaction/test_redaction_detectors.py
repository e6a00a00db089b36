"""Every built-in detector finds what it should and leaves look-alikes alone."""

from __future__ import annotations

import base64
import json

import pytest

from aperion_event_bus.redaction import Redactor


@pytest.fixture(scope="module")
def r() -> Redactor:
    return Redactor()


def _jwt(payload: object = None) -> str:
    def enc(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc(payload or {'sub': '42'})}.c2lnbmF0dXJl"


POSITIVE = [
    # (text containing the value, the value, expected token)
    ("mail john.doe@example.com now", "john.doe@example.com", "[REDACTED_EMAIL]"),
    ("unicode josé.garcía@ejemplo.es ok", "josé.garcía@ejemplo.es", "[REDACTED_EMAIL]"),
    ("GET /u?email=jane%40example.org", "jane%40example.org", "[REDACTED_EMAIL]"),
    ("call (123) 456-7890", "(123) 456-7890", "[REDACTED_PHONE]"),
    ("call 415-555-2671 today", "415-555-2671", "[REDACTED_PHONE]"),
    ("call 415.555.2671", "415.555.2671", "[REDACTED_PHONE]"),
    ("e164 +14155552671", "+14155552671", "[REDACTED_PHONE]"),
    ("uk +44 20 7946 0958", "+44 20 7946 0958", "[REDACTED_PHONE]"),
    ("uk 020 7946 0958", "020 7946 0958", "[REDACTED_PHONE]"),
    ("de +49 30 901820", "+49 30 901820", "[REDACTED_PHONE]"),
    ("de 0151 23456789", "0151 23456789", "[REDACTED_PHONE]"),
    ("fr 06 12 34 56 78", "06 12 34 56 78", "[REDACTED_PHONE]"),
    ("fr 06.12.34.56.78", "06.12.34.56.78", "[REDACTED_PHONE]"),
    ("in +91 98765 43210", "+91 98765 43210", "[REDACTED_PHONE]"),
    ("in 098765 43210", "098765 43210", "[REDACTED_PHONE]"),
    ("visa 4111 1111 1111 1111", "4111 1111 1111 1111", "[REDACTED_CC]"),
    ("visa 4111111111111111", "4111111111111111", "[REDACTED_CC]"),
    ("mc 5555-5555-5555-4444", "5555-5555-5555-4444", "[REDACTED_CC]"),
    ("mc2 2223003122003222", "2223003122003222", "[REDACTED_CC]"),
    ("amex 3782 822463 10005", "3782 822463 10005", "[REDACTED_CC]"),
    ("disc 6011111111111117", "6011111111111117", "[REDACTED_CC]"),
    ("jcb 3530111333300000", "3530111333300000", "[REDACTED_CC]"),
    ("ssn 123-45-6789", "123-45-6789", "[REDACTED_SSN]"),
    ("iban DE89 3704 0044 0532 0130 00.", "DE89 3704 0044 0532 0130 00", "[REDACTED_IBAN]"),
    ("iban GB82WEST12345698765432", "GB82WEST12345698765432", "[REDACTED_IBAN]"),
    ("from 8.8.8.8 ok", "8.8.8.8", "[REDACTED_IP]"),
    ("from 192.168.1.10", "192.168.1.10", "[REDACTED_IP]"),
    ("v6 2a00:1450:4001:81d::200e", "2a00:1450:4001:81d::200e", "[REDACTED_IP]"),
    ("v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
     "[REDACTED_IP]"),
    ("key AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "[REDACTED_AWS_KEY]"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "[REDACTED_AWS_SECRET]"),
    ("arn:aws:iam::123456789012:user/bob", "arn:aws:iam::123456789012:user/bob",
     "[REDACTED_AWS_ARN]"),
    ("g AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyA1234567890abcdefghijklmnopqrstuv",
     "[REDACTED_GCP_KEY]"),
    ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
     "[REDACTED_GITHUB_TOKEN]"),
    ("gh github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX",
     "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX",
     "[REDACTED_GITHUB_TOKEN]"),
    ("gl glpat-abcdefghij1234567890", "glpat-abcdefghij1234567890", "[REDACTED_GITLAB_TOKEN]"),
    ("s xoxb-123456789012-1234567890123-abcdefghijklmnop",
     "xoxb-123456789012-1234567890123-abcdefghijklmnop", "[REDACTED_SLACK_TOKEN]"),
    ("hook https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXX",
     "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXX", "[REDACTED_SLACK_WEBHOOK]"),
    ("stripe sk_live_abcdefghijklmnop1234", "sk_live_abcdefghijklmnop1234", "[REDACTED_STRIPE_KEY]"),
    ("openai sk-proj-abcdefghijklmnopqrstuvwx", "sk-proj-abcdefghijklmnopqrstuvwx", "[REDACTED_KEY]"),
    (f"jwt {_jwt()}", _jwt(), "[REDACTED_JWT]"),
    ("Authorization: Bearer abcdef123456", "abcdef123456", "[REDACTED_BEARER]"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "[REDACTED_BASIC_AUTH]"),
    ("password=hunter2 next", "hunter2", "[REDACTED]"),
    ('{"client_secret": "abc def"}', "abc def", "[REDACTED]"),
    ("X-Api-Key: k3y-value", "k3y-value", "[REDACTED]"),
    ('escaped {\\"password\\": \\"s3cret\\"}', "s3cret", "[REDACTED]"),
    ("https://x.com/cb?access_token=tok123&page=2", "tok123", "[REDACTED]"),
    ("https://maps.example.com/api?key=abc123xyz", "abc123xyz", "[REDACTED]"),
    ("Cookie: session=abc123; theme=dark", "session=abc123; theme=dark", "[REDACTED]"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "value", "token"), POSITIVE, ids=[p[2] + p[0][:12] for p in POSITIVE]
)
def test_detects(r: Redactor, text: str, value: str, token: str) -> None:
    out = r.redact_string(text)
    assert value not in out
    assert token in out


def test_url_credentials_keep_1x_shape(r: Redactor) -> None:
    assert r.redact_string("postgres://admin:s3cr3t@db:5432/app") == (
        "postgres://[REDACTED]:[REDACTED]@db:5432/app"
    )
    out = r.redact_string("https://user%40corp:p%40ss@host/x")
    assert out == "https://[REDACTED]:[REDACTED]@host/x"
    encoded = r.redact_string("next=https%3A%2F%2Fbob%3Ahunter2%40example.com%2F")
    assert "hunter2" not in encoded and "bob" not in encoded


def test_pem_block_is_removed_whole(r: Redactor) -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAKCAQEA\n-----END RSA PRIVATE KEY-----"
    assert r.redact_string(f"key:\n{pem}\nend") == "key:\n[REDACTED_PRIVATE_KEY]\nend"
    truncated = r.redact_string("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg")
    assert truncated == "[REDACTED_PRIVATE_KEY]"


def test_bearer_keeps_scheme(r: Redactor) -> None:
    assert r.redact_string("Authorization: Bearer abcdef123456") == (
        "Authorization: Bearer [REDACTED_BEARER]"
    )


def test_jwt_must_decode(r: Redactor) -> None:
    fake = "eyJnotjson.eyJalsonot.sig"
    assert r.redact_string(f"t {fake}") == f"t {fake}"


def test_aws_secret_needs_context(r: Redactor) -> None:
    bare = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert r.redact_string(f"value {bare}") == f"value {bare}"


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000",
    ],
)  # fmt: skip
def test_invalid_ssn_left_alone(r: Redactor, text: str) -> None:
    assert r.redact_string(f"id {text}") == f"id {text}"


def test_invalid_iban_left_alone(r: Redactor) -> None:
    assert r.redact_string("DE89 3704 0044 0532 0130 01") == "DE89 3704 0044 0532 0130 01"


@pytest.mark.parametrize(
    "ip",
    ["127.0.0.1", "0.0.0.0", "255.255.255.255", "255.255.255.0", "255.255.0.0", "::1", "::",
     "224.0.0.1"],
)  # fmt: skip
def test_non_personal_ips(r: Redactor, ip: str) -> None:
    assert r.redact_string(f"bind {ip} ok") == f"bind {ip} ok"


def test_private_ips_configurable() -> None:
    assert Redactor().redact_string("from 10.1.2.3") == "from [REDACTED_IP]"
    relaxed = Redactor(redact_private_ips=False)
    assert relaxed.redact_string("from 10.1.2.3 and 8.8.4.4") == "from 10.1.2.3 and [REDACTED_IP]"


FALSE_POSITIVES = [
    "uuid 550e8400-e29b-41d4-a716-446655440000",
    "request-id: 12345678-1234-1234-1234-123456789012",
    "at 2024-01-15T10:30:00Z and 2024-01-15T10:30:00.123456+02:00",
    "2024-05-01 12:00:00,123 INFO started",
    "epoch 1717171717 millis 1717171717000",
    "version 1.2.3 and v10.20.30-rc.1+build.5",
    "commit a3f5b2c1d4e6f7890123456789abcdef01234567",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "order ORD-2024-000123 customer CUST-000042",
    "not a card 4111111111111112",
    "price $1,299.99 or €1.299,00 or 1299.99 USD",
    "coords 37.7749,-122.4194 and 48.8566, 2.3522",
    "published user.created and order.paid",
    "correlation_id=corr-1234567890 causation_id=evt_01HXYZ8K9Q2M3N4P5R6S7T8V9W",
    "git remote git@github.com:org/repo.git",
    "retina icon@2x.png logo@3x.webp",
    "GET https://host:443/users/@me",
    "img data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    "Datum 01.02.2024 und 15.03.2024",
    "date 15/01/2024 10:30",
    "auth_info=public max_tokens=4096 token_count=12 token_type=bearer",
    "The bearer of this ticket; Basic information",
    "ISBN 978-3-16-148410-0",
    "windows 10.0.19041.1",
    "traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "mac aa:bb:cc:dd:ee:ff time 10:30:00",
    "npm @scope/package@1.2.3 decorator @functools.cache",
    "password reset requested",
    "processed 1500 events in 2.35s (638.3 ev/s)",
    "HTTP/1.1 200 1532 0.023",
]


@pytest.mark.parametrize("text", FALSE_POSITIVES)
def test_false_positive_traps_unchanged(r: Redactor, text: str) -> None:
    assert r.redact_string(text) == text


def test_several_in_one_line(r: Redactor) -> None:
    out = r.redact_string("a@b.com, +1 415 555 2671 and 4111-1111-1111-1111 at 8.8.8.8")
    assert out == "[REDACTED_EMAIL], [REDACTED_PHONE] and [REDACTED_CC] at [REDACTED_IP]"


def test_phone_with_trailing_number(r: Redactor) -> None:
    assert r.redact_string("+1 415 555 2671 2") == "[REDACTED_PHONE] 2"


def test_find_reports_spans(r: Redactor) -> None:
    assert r.find("x a@b.co y") == [(2, 8, "email")]
