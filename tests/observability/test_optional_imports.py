"""Importing observability never imports the extras; without them everything is a no-op."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from aperion_event_bus.errors import EventBusError, MissingExtraError

EXTRAS = ("opentelemetry", "prometheus_client", "structlog")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_does_not_load_extras():
    proc = _run(
        f"""
        import sys
        import aperion_event_bus.observability
        import aperion_event_bus.metrics, aperion_event_bus.telemetry
        from aperion_event_bus.observability import MetricsCollector, InMemoryMetrics
        c = MetricsCollector(InMemoryMetrics())
        c.record_event_emitted("a.b", 0.1)
        from aperion_event_bus.observability import (
            get_trace_correlation_id, inject_trace_context_to_headers,
            add_event_to_span, set_span_attribute, trace_headers_from,
        )
        assert get_trace_correlation_id() is None
        assert inject_trace_context_to_headers({{}}) == {{}}
        add_event_to_span("x"); set_span_attribute("k", 1)
        trace_headers_from({{"traceparent": "x"}})
        import logging
        from aperion_event_bus.observability import get_logger, EventContextFilter, JsonFormatter
        h = logging.StreamHandler(); h.addFilter(EventContextFilter()); h.setFormatter(JsonFormatter())
        get_logger("t").addHandler(h); get_logger("t").warning("hi")
        loaded = [m for m in sys.modules if m.split(".")[0] in {EXTRAS!r}]
        assert not loaded, loaded
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_everything_is_a_noop_without_extras():
    proc = _run(
        """
        import sys
        for name in ("opentelemetry", "opentelemetry.trace", "opentelemetry.metrics",
                     "opentelemetry.context", "prometheus_client", "structlog"):
            sys.modules[name] = None  # makes `import name` raise ImportError
        from aperion_event_bus import telemetry
        from aperion_event_bus.observability import *  # noqa
        from aperion_event_bus.errors import MissingExtraError
        assert is_otel_available() is False and telemetry.OTEL_AVAILABLE is False
        assert get_tracer() is None and get_current_span() is None
        assert get_trace_correlation_id() is None
        assert extract_trace_context_from_headers(
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}) is None
        h = {"a": "b"}
        assert inject_trace_context_to_headers(h) is h
        def f(x): return x
        assert traced()(f) is f
        add_event_to_span("x"); set_span_attribute("k", "v")
        for factory, extra in ((EventTracer, "otel"), (OTelMetrics, "otel"),
                               (PrometheusMetrics, "prometheus"), (structlog_processors, "structlog")):
            try:
                factory()
            except MissingExtraError as exc:
                assert isinstance(exc, ImportError)
                assert f"pip install 'aperion-event-bus[{extra}]'" in str(exc), str(exc)
            else:
                raise AssertionError(factory)
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_missing_extra_error_in_process(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    from aperion_event_bus.observability import PrometheusMetrics

    with pytest.raises(MissingExtraError) as info:
        PrometheusMetrics()
    assert isinstance(info.value, ImportError) and isinstance(info.value, EventBusError)
    assert info.value.extra == "prometheus"
