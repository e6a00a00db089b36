"""Names of the detected data types and the text each one is replaced with.

One table, so the replacement tokens (part of the 1.x API) live in one place and
the redactor, the docs and the tests agree on them.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BUILTIN_KINDS",
    "FIXED_KINDS",
    "KEY_TOKEN",
    "TOKENS",
    "URL_CREDENTIALS_TOKEN",
    "label_for",
    "token_for",
]

#: Replacement for a value under a sensitive key (1.x behaviour).
KEY_TOKEN: Final = "[REDACTED]"

#: Replacement for ``user:password`` between ``://`` and ``@`` (1.x behaviour).
URL_CREDENTIALS_TOKEN: Final = "[REDACTED]:[REDACTED]"

#: kind -> typed token. The first block is the 1.x set; the rest are new in 2.0.
TOKENS: Final[dict[str, str]] = {
    "email": "[REDACTED_EMAIL]",
    "credit_card": "[REDACTED_CC]",
    "ssn": "[REDACTED_SSN]",
    "phone": "[REDACTED_PHONE]",
    "ip": "[REDACTED_IP]",
    "api_key": "[REDACTED_KEY]",
    "bearer": "[REDACTED_BEARER]",
    "aws_key": "[REDACTED_AWS_KEY]",
    "aws_secret": "[REDACTED_AWS_SECRET]",
    "aws_arn": "[REDACTED_AWS_ARN]",
    "gcp_key": "[REDACTED_GCP_KEY]",
    "jwt": "[REDACTED_JWT]",
    "github_token": "[REDACTED_GITHUB_TOKEN]",
    "gitlab_token": "[REDACTED_GITLAB_TOKEN]",
    "slack_token": "[REDACTED_SLACK_TOKEN]",
    "stripe_key": "[REDACTED_STRIPE_KEY]",
    # new in 2.0
    "iban": "[REDACTED_IBAN]",
    "private_key": "[REDACTED_PRIVATE_KEY]",
    "basic_auth": "[REDACTED_BASIC_AUTH]",
    "slack_webhook": "[REDACTED_SLACK_WEBHOOK]",
    # values that are secret because of the name in front of them
    "secret": KEY_TOKEN,
    "sensitive_key": KEY_TOKEN,
    "url_credentials": URL_CREDENTIALS_TOKEN,
}

#: Kinds whose replacement never changes with the mode: the value is a secret
#: (no point in making it joinable) or the token shape is part of the 1.x API.
FIXED_KINDS: Final = frozenset({"secret", "sensitive_key", "url_credentials"})

BUILTIN_KINDS: Final = frozenset(TOKENS)

_LABELS: Final[dict[str, str]] = {"credit_card": "CC", "api_key": "KEY"}


def token_for(kind: str) -> str:
    """The typed token for ``kind``; custom kinds get ``[REDACTED_<KIND>]``."""
    token = TOKENS.get(kind)
    if token is None:
        token = f"[REDACTED_{label_for(kind)}]"
    return token


def label_for(kind: str) -> str:
    """Upper-case label used inside tokens: ``email`` -> ``EMAIL``, ``credit_card`` -> ``CC``."""
    label = _LABELS.get(kind)
    if label is None:
        label = "".join(c if c.isalnum() else "_" for c in kind).upper() or "CUSTOM"
    return label
