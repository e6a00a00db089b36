"""Logger tree, EventContextFilter, JsonFormatter and the structlog processor chain."""

from __future__ import annotations

import io
import json
import logging
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from aperion_event_bus.observability import (
    EventContextFilter,
    JsonFormatter,
    configure_logging,
    get_logger,
    structlog_processors,
)
from aperion_event_bus.observability import logging as obs_logging


class _Evt:
    event_id = "evt_42"
    event_type = "order.created"
    correlation_id = "corr-from-event"


@pytest.fixture
def fake_context(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Replace aperion_event_bus.context with a controllable stand-in."""
    state = types.SimpleNamespace(correlation_id=None, event=None)
    module = types.ModuleType("aperion_event_bus.context")
    module.get_correlation_id = lambda: state.correlation_id  # type: ignore[attr-defined]
    module.current_event = lambda: state.event  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aperion_event_bus.context", module)
    return state


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(EventContextFilter())
    logger = get_logger("tests.capture")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield logger, stream, handler
    logger.removeHandler(handler)


def test_get_logger_tree():
    assert get_logger().name == "aperion_event_bus"
    assert get_logger("dispatch").name == "aperion_event_bus.dispatch"
    assert get_logger("aperion_event_bus.bus").name == "aperion_event_bus.bus"
    root_handlers = list(logging.getLogger().handlers)
    get_logger("x")
    assert logging.getLogger().handlers == root_handlers
    assert logging.getLogger("aperion_event_bus").handlers == []


def test_filter_stamps_context(fake_context, capture):
    logger, stream, handler = capture
    handler.setFormatter(
        logging.Formatter("%(correlation_id)s|%(event_id)s|%(event_type)s|%(message)s")
    )
    logger.info("outside")
    fake_context.correlation_id = "corr-1"
    fake_context.event = _Evt()
    logger.info("inside")
    logger.info("explicit", extra={"correlation_id": "given"})
    fake_context.correlation_id = None
    logger.info("fallback")
    lines = stream.getvalue().splitlines()
    assert lines == [
        "None|None|None|outside",
        "corr-1|evt_42|order.created|inside",
        "given|evt_42|order.created|explicit",
        "corr-from-event|evt_42|order.created|fallback",
    ]


def test_filter_with_real_context_module(capture):
    ctx = pytest.importorskip("aperion_event_bus.context")
    logger, stream, handler = capture
    handler.setFormatter(logging.Formatter("%(correlation_id)s %(message)s"))
    with ctx.CorrelationContext("real-corr"):
        logger.warning("hello")
    assert stream.getvalue().strip() == "real-corr hello"


def test_filter_without_context_module(monkeypatch, capture):
    monkeypatch.setitem(sys.modules, "aperion_event_bus.context", None)  # import fails
    assert obs_logging.event_context() == dict.fromkeys(obs_logging.CONTEXT_FIELDS)
    logger, stream, handler = capture
    handler.setFormatter(logging.Formatter("%(correlation_id)s %(message)s"))
    logger.info("ok")
    assert stream.getvalue().strip() == "None ok"


def test_json_formatter(fake_context, capture):
    logger, stream, handler = capture
    handler.setFormatter(JsonFormatter())
    fake_context.correlation_id = "corr-7"
    fake_context.event = _Evt()
    try:
        raise ValueError("broken")
    except ValueError:
        logger.exception(
            "failed %s", "badly", extra={"handler": "h1", "attempt": 2, "obj": object()}
        )
    logger.info("plain ünïcode")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "ERROR"
    assert first["logger"] == "aperion_event_bus.tests.capture"
    assert first["message"] == "failed badly"
    assert (first["correlation_id"], first["event_id"], first["event_type"]) == (
        "corr-7",
        "evt_42",
        "order.created",
    )
    assert "ValueError: broken" in first["exception"]
    assert first["handler"] == "h1" and first["attempt"] == 2
    assert first["obj"].startswith("<object object")
    assert first["timestamp"].endswith("+00:00")
    assert second["message"] == "plain ünïcode" and "exception" not in second


def test_json_formatter_redacts_and_includes_trace_ids(provider, redactor):
    from opentelemetry import trace

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redactor=redactor))  # works without the filter too
    logger = get_logger("tests.json2")
    logger.addHandler(handler)
    try:
        tracer = trace.get_tracer("t", tracer_provider=provider)
        with tracer.start_as_current_span("op") as span:
            logger.warning("mail to bob@example.com", extra={"note": "the secret"})
        doc = json.loads(stream.getvalue())
    finally:
        logger.removeHandler(handler)
    assert "bob@example.com" not in json.dumps(doc) and "secret" not in json.dumps(doc)
    assert doc["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert len(doc["span_id"]) == 16


def test_no_pii_in_log_lines_from_payload(fake_context, redactor):
    """A payload full of PII logged through the JSON formatter with a redactor stays clean."""
    stream = io.StringIO()
    handler = configure_logging(logging.StreamHandler(stream), json_format=True)
    handler.setFormatter(JsonFormatter(redactor=redactor))
    fake_context.correlation_id = "corr-pii"
    try:
        payload = {"email": "carol@example.com", "token": "secret-abc"}
        get_logger("dispatch").error("handler failed for payload %s", payload)
        line = json.loads(stream.getvalue())
    finally:
        logging.getLogger("aperion_event_bus").removeHandler(handler)
    assert line["correlation_id"] == "corr-pii"
    assert "carol@example.com" not in line["message"] and "secret" not in line["message"]


def test_configure_logging_is_idempotent_and_leaves_root_alone():
    root_before = list(logging.getLogger().handlers)
    lib = logging.getLogger("aperion_event_bus")
    marker = logging.Filter("marker")
    handler = configure_logging(
        logging.StreamHandler(io.StringIO()), level="DEBUG", redaction_filter=marker
    )
    try:
        configure_logging(handler, redaction_filter=marker)
        assert lib.handlers.count(handler) == 1
        assert sum(isinstance(f, EventContextFilter) for f in handler.filters) == 1
        assert handler.filters.count(marker) == 1
        assert lib.level == logging.DEBUG
        assert logging.getLogger().handlers == root_before
    finally:
        lib.removeHandler(handler)
        lib.setLevel(logging.NOTSET)


def test_structlog_processors(fake_context, redactor):
    structlog = pytest.importorskip("structlog")
    fake_context.correlation_id = "corr-s"
    fake_context.event = _Evt()
    chain = structlog_processors(redactor)
    structlog.contextvars.bind_contextvars(request_id="r-1")
    try:
        event_dict: Any = {"event": "sent to dave@example.com", "user": "secret"}
        for proc in chain:
            event_dict = proc(None, "info", event_dict)
    finally:
        structlog.contextvars.clear_contextvars()
    doc = json.loads(event_dict)
    assert doc["correlation_id"] == "corr-s" and doc["event_id"] == "evt_42"
    assert doc["request_id"] == "r-1"
    assert doc["level"] == "info" and "timestamp" in doc
    assert "dave@example.com" not in doc["event"] and doc["user"] == "[REDACTED]"


def test_structlog_processors_accepts_a_processor_callable():
    pytest.importorskip("structlog")

    def scrub(_logger: Any, _method: str, event_dict: Any) -> Any:
        event_dict["scrubbed"] = True
        return event_dict

    chain = structlog_processors(scrub, json_output=False)
    assert scrub in chain
    out: Any = {"event": "x"}
    for proc in chain:
        out = proc(None, "warning", out)
    assert out["scrubbed"] is True
    with pytest.raises(TypeError):
        structlog_processors(42)
