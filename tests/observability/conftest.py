"""Shared fixtures: explicit SDK tracer providers with in-memory exporters.

The SDK's global tracer provider can be set only once per process, so tests use
an explicit ``TracerProvider`` wherever they can; the few that need the global
one (the 1.x ``traced`` decorator) use the session fixture below.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@dataclass
class FakeEvent:
    """Stands in for aperion_event_bus.Event (same attribute names)."""

    event_type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = "evt_1"
    source: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None


class FakeRedactor:
    """Replaces the word 'secret' and e-mail-like tokens; counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def redact_string(self, text: str) -> str:
        self.calls += 1
        return " ".join(
            "[REDACTED]" if ("@" in w or "secret" in w) else w for w in text.split(" ")
        ).replace("secret", "[REDACTED]")

    def redact(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.redact_string(obj)
        if isinstance(obj, Mapping):
            return {k: self.redact(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.redact(v) for v in obj]
        return obj


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield tp
    tp.shutdown()


@pytest.fixture(scope="session")
def _global_pair() -> tuple[TracerProvider, InMemorySpanExporter]:
    """The process-wide SDK provider, set once for the whole test session."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # set elsewhere already: add our exporter
        current.add_span_processor(SimpleSpanProcessor(exporter))
        return current, exporter
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tp)
    return tp, exporter


@pytest.fixture
def global_exporter(
    _global_pair: tuple[TracerProvider, InMemorySpanExporter],
) -> InMemorySpanExporter:
    exporter = _global_pair[1]
    exporter.clear()
    return exporter


@pytest.fixture
def make_event() -> type[FakeEvent]:
    return FakeEvent


@pytest.fixture
def redactor() -> FakeRedactor:
    return FakeRedactor()
