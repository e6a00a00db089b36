"""The logging filter and the structlog processor."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from aperion_event_bus.redaction import (
    RedactingFilter,
    RedactingProcessor,
    Redactor,
    install_redacting_filter,
    redact_event_dict,
)


@pytest.fixture
def logger_and_stream() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(user)s"))
    logger = logging.getLogger("test.redaction.filter")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream, handler
    logger.handlers.clear()
    logger.filters.clear()


def test_filter_redacts_message_args_and_extra(logger_and_stream) -> None:
    logger, stream, handler = logger_and_stream
    handler.addFilter(RedactingFilter())
    logger.info("login %s from %s", "bob@example.com", "8.8.8.8", extra={"user": "x@y.org"})
    logger.info("token=%s", 12345678, extra={"user": "plain"})
    lines = stream.getvalue().splitlines()
    assert lines[0] == "INFO login [REDACTED_EMAIL] from [REDACTED_IP] [REDACTED_EMAIL]"
    assert lines[1] == "INFO token=[REDACTED] plain"


def test_filter_key_aware_extra_and_dict_messages(logger_and_stream) -> None:
    logger, _stream, _handler = logger_and_stream
    flt = RedactingFilter()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    keep.addFilter(flt)
    logger.addHandler(keep)
    logger.info({"password": "p", "note": "a@b.com"}, extra={"api_key": "k", "user": "u"})
    record = records[-1]
    assert record.msg == {"password": "[REDACTED]", "note": "[REDACTED_EMAIL]"}
    assert record.api_key == "[REDACTED]"  # type: ignore[attr-defined]


def test_filter_leaves_clean_records_untouched(logger_and_stream) -> None:
    logger, stream, handler = logger_and_stream
    handler.addFilter(RedactingFilter())
    logger.info("processed %d events", 42, extra={"user": "u"})
    assert stream.getvalue() == "INFO processed 42 events u\n"


def test_filter_redacts_exception_text(logger_and_stream) -> None:
    logger, stream, handler = logger_and_stream
    handler.addFilter(RedactingFilter())
    try:
        raise ValueError("bad card 4111 1111 1111 1111 for bob@example.com")
    except ValueError:
        logger.exception("failed", extra={"user": "u"})
    text = stream.getvalue()
    assert "4111" not in text and "bob@example.com" not in text
    assert "[REDACTED_CC]" in text and "ValueError" in text


def test_filter_is_idempotent_on_logger_and_handler(logger_and_stream) -> None:
    logger, stream, handler = logger_and_stream
    flt = install_redacting_filter(logger, Redactor(mode="mask"))
    assert flt in logger.filters and flt in handler.filters
    logger.warning("card %s", "4111111111111111", extra={"user": "u"})
    assert stream.getvalue() == "WARNING card ************1111 u\n"


def test_filter_never_drops_and_withholds_on_failure(logger_and_stream) -> None:
    logger, stream, handler = logger_and_stream

    def boom(text: str) -> list[tuple[int, int, str]]:
        raise RuntimeError("detector bug")

    handler.addFilter(RedactingFilter(Redactor(detectors=[boom])))
    logger.info("secret stuff a@b.com", extra={"user": "u"})
    assert "a@b.com" not in stream.getvalue()
    assert "[REDACTION_FAILED]" in stream.getvalue()


def test_filter_on_root_logger_handlers() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    flt = install_redacting_filter(None)
    try:
        logging.getLogger("some.library").warning("user %s", "x@y.com")
    finally:
        root.removeHandler(handler)
        root.removeFilter(flt)
    assert stream.getvalue() == "user [REDACTED_EMAIL]\n"


def test_structlog_processor_plain_call() -> None:
    proc = RedactingProcessor()
    event = {"event": "login a@b.com", "password": "p", "user_id": 3}
    out = proc(None, "info", event)
    assert out == {"event": "login [REDACTED_EMAIL]", "password": "[REDACTED]", "user_id": 3}
    assert event["password"] == "p"
    assert redact_event_dict(None, "info", {"token": "t"}) == {"token": "[REDACTED]"}


def test_structlog_pipeline() -> None:
    captured: list[dict[str, object]] = []

    def capture(logger: object, method: str, event_dict: dict[str, object]) -> str:
        captured.append(dict(event_dict))
        return "ok"

    log = structlog.wrap_logger(
        structlog.PrintLogger(io.StringIO()),
        processors=[structlog.processors.format_exc_info, RedactingProcessor(), capture],
    )
    log.info("card 4111 1111 1111 1111", api_key="k", ip="8.8.8.8")
    assert captured == [
        {"event": "card [REDACTED_CC]", "api_key": "[REDACTED]", "ip": "[REDACTED_IP]"}
    ]
