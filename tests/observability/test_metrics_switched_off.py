"""Metrics switched off entirely (an OTelMetrics on a no-op meter provider) cost the
bus nothing per event; a backend swap on the collector re-wires the bus; a collector
over NoopMetrics still keeps its exact figures (1.x get_stats()['metrics'])."""

from __future__ import annotations

import gc
import weakref

import pytest

from aperion_event_bus import EventBus, InMemoryMetrics, MetricsCollector

pytest.importorskip("opentelemetry.metrics")
from opentelemetry.metrics import NoOpMeterProvider

from aperion_event_bus.observability.otel_metrics import OTelMetrics


def test_only_an_explicit_noop_meter_records_nothing() -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    assert OTelMetrics(NoOpMeterProvider()).records_nothing
    assert not OTelMetrics(MeterProvider()).records_nothing
    assert not OTelMetrics().records_nothing  # the global proxy may start recording later
    assert not InMemoryMetrics().records_nothing


async def test_a_noop_meter_costs_the_bus_nothing_and_records_nothing() -> None:
    async with EventBus(metrics=OTelMetrics(NoOpMeterProvider())) as bus:
        seen: list[int] = []
        bus.on("a.b", lambda e: seen.append(e.payload["i"]))
        for i in range(5):
            await bus.publish("a.b", {"i": i})
        bus.publish_nowait("a.b", {"i": 5})
        assert await bus.drain(5)
        assert bus._dispatcher.observer is None and bus._metrics is None
        stats = bus.get_stats()
    assert seen == [0, 1, 2, 3, 4, 5]
    assert stats["metrics_enabled"] is True
    assert stats["metrics"]["total_events_emitted"] == 0


async def test_swapping_the_backend_rewires_the_bus() -> None:
    collector = MetricsCollector(OTelMetrics(NoOpMeterProvider()))
    async with EventBus(metrics=collector) as bus:
        bus.on("a.b", lambda e: None)
        await bus.publish("a.b", {})
        memory = InMemoryMetrics()
        collector.backend = memory
        assert bus._dispatcher.observer is not None
        await bus.publish("a.b", {})
        await bus.publish("a.b", {})
        assert collector.get_snapshot()["total_events_emitted"] == 2
        assert 2 in memory.counters.values()  # the new backend got both publishes
        collector.backend = OTelMetrics(NoOpMeterProvider())
        assert bus._dispatcher.observer is None
        await bus.publish("a.b", {})
        assert collector.get_snapshot()["total_events_emitted"] == 2


async def test_a_noop_metrics_collector_keeps_its_exact_figures() -> None:
    async with EventBus(metrics=MetricsCollector()) as bus:  # NoopMetrics backend
        bus.on("a.b", lambda e: None)
        for _ in range(3):
            await bus.publish("a.b", {})
        assert bus.get_stats()["metrics"]["total_events_emitted"] == 3


def test_a_shared_collector_does_not_keep_a_bus_alive() -> None:
    collector = MetricsCollector(InMemoryMetrics())
    bus = EventBus(metrics=collector)
    ref = weakref.ref(bus)
    bus.shutdown(1)
    del bus
    gc.collect()
    assert ref() is None
    collector.backend = InMemoryMetrics()  # the dead bus's watcher is dropped quietly
    assert collector._watchers == []
