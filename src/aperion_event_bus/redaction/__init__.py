"""PII and secret redaction for everything the bus writes as text.

``Redactor`` finds personal data (emails, phones, cards, SSNs, IBANs, IPs) and
secrets (cloud keys, tokens, JWTs, private keys, credentials in URLs and
``key=value`` text) with cheap patterns confirmed by validators, and replaces
them with typed tokens, masks or keyed pseudonyms. ``RedactingFilter`` and
``RedactingProcessor`` plug it into ``logging`` and structlog.
"""

from __future__ import annotations

from ._default import default_redactor
from ._tokens import KEY_TOKEN, TOKENS, URL_CREDENTIALS_TOKEN, token_for
from .logging_filter import RedactingFilter, install_redacting_filter
from .redactor import Detector, PatternsArg, RedactionMode, Redactor
from .structlog_processor import RedactingProcessor, redact_event_dict

__all__ = [
    "KEY_TOKEN",
    "TOKENS",
    "URL_CREDENTIALS_TOKEN",
    "Detector",
    "PatternsArg",
    "RedactingFilter",
    "RedactingProcessor",
    "RedactionMode",
    "Redactor",
    "default_redactor",
    "install_redacting_filter",
    "redact_event_dict",
    "token_for",
]
