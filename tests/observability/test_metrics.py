"""Metrics backends and MetricsCollector: values after a known workload, bounds, exports."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from aperion_event_bus.metrics import (
    CallbackMetrics,
    InMemoryMetrics,
    MetricsBackend,
    MetricsCollector,
    NoopMetrics,
    TimingContext,
)

HANDLER_TAGS = {"event_type": "order.created", "handler_name": "h1"}


def workload(c: MetricsCollector) -> None:
    """3 published, 1 dropped, 1 failed event; handler h1: 2 ok + 1 error, h2: 1 timeout."""
    for _ in range(3):
        c.record_event_emitted("order.created", 0.002)
    c.record_event_dropped("order.created")
    c.record_event_failed("order.created")
    c.record_handler_execution("order.created", "h1", 0.010, True)
    c.record_handler_execution("order.created", "h1", 0.030, True)
    c.record_handler_execution("order.created", "h1", 0.020, False)
    c.record_handler_retry("order.created", "h1")
    c.record_handler_timeout("order.created", "h2", 1.5)
    c.record_redactions({"email": 2, "phone": 1})
    c.record_redactions({"email": 1})
    c.update_pending_count(4)
    c.update_queue_depth(3)
    c.update_in_flight(1)
    c.update_dlq_size(2)
    c.update_subscription_count(5)


def test_snapshot_after_workload_with_noop_backend():
    c = MetricsCollector()
    assert not c.enabled
    workload(c)
    snap = c.get_snapshot()
    assert snap["events_emitted"] == {"order.created": 3}
    assert snap["events_dropped"] == {"order.created": 1}
    assert snap["events_failed"] == {"order.created": 1}
    assert snap["total_events_emitted"] == 3
    assert snap["total_events_dropped"] == 1
    assert snap["total_events_failed"] == 1
    h1 = snap["handler_stats"]["h1"]
    assert (h1["total_calls"], h1["success_count"], h1["failure_count"]) == (3, 2, 1)
    assert h1["retry_count"] == 1
    assert h1["avg_duration_seconds"] == pytest.approx(0.020)
    assert (h1["min_duration_seconds"], h1["max_duration_seconds"]) == (0.010, 0.030)
    assert h1["latencies"] == [0.010, 0.030, 0.020]
    h2 = snap["handler_stats"]["h2"]
    assert (h2["total_calls"], h2["failure_count"], h2["timeout_count"]) == (1, 1, 1)
    assert snap["redactions"] == {"email": 3, "phone": 1}
    assert snap["total_redactions"] == 4
    assert (snap["pending_events"], snap["queue_depth"], snap["in_flight"]) == (4, 3, 1)
    assert (snap["dlq_size"], snap["subscriptions"]) == (2, 5)
    assert snap["backend"] == "NoopMetrics"
    c.reset()
    assert c.get_snapshot()["total_events_emitted"] == 0


def test_in_memory_backend_after_workload():
    m = InMemoryMetrics()
    c = MetricsCollector(m)
    workload(c)
    assert m.get_counter("event_bus_events_emitted_total", {"event_type": "order.created"}) == 3
    assert m.get_counter("event_bus_events_dropped_total", {"event_type": "order.created"}) == 1
    assert m.get_counter("event_bus_events_failed_total", {"event_type": "order.created"}) == 1
    ok = {**HANDLER_TAGS, "status": "success"}
    assert m.get_counter("event_bus_handler_executions_total", ok) == 2
    assert m.get_counter("event_bus_handler_errors_total", HANDLER_TAGS) == 1
    assert m.get_counter("event_bus_handler_retries_total", HANDLER_TAGS) == 1
    h2 = {"event_type": "order.created", "handler_name": "h2"}
    assert m.get_counter("event_bus_handler_timeouts_total", h2) == 1
    assert m.get_timing_values("event_bus_handler_latency_ms", ok) == pytest.approx([10, 30])
    assert m.get_timing_values(
        "event_bus_emit_latency_ms", {"event_type": "order.created"}
    ) == pytest.approx([2, 2, 2])
    assert m.get_counter("event_bus_redactions_total", {"redaction_type": "email"}) == 3
    assert m.get_gauge("event_bus_pending_events") == 4
    assert m.get_gauge("event_bus_queue_depth") == 3
    assert m.get_gauge("event_bus_in_flight") == 1
    assert m.get_gauge("event_bus_dlq_size") == 2
    assert m.get_gauge("event_bus_subscriptions") == 5
    # key format: name{k=v,...} with sorted tags, whatever the dict order
    key = "event_bus_handler_errors_total{event_type=order.created,handler_name=h1}"
    assert m.counters[key] == 1
    assert m.get_counter("x", {"b": "2", "a": "1"}) == 0
    m.increment("x", 1, {"b": "2", "a": "1"})
    assert "x{a=1,b=2}" in m.counters


def test_in_memory_1x_surface():
    m = InMemoryMetrics()
    m.increment("c")
    m.increment("c", 4)
    m.gauge("g", 1.5)
    m.histogram("h", 3.0, {"k": "v"})
    m.timing("t", 12.0)
    assert m.get_counter("c") == 5
    assert m.get_gauge("g") == 1.5 and m.get_gauge("missing") is None
    assert m.get_histogram_values("h", {"k": "v"}) == [3.0]
    assert m.histograms == {"h{k=v}": [3.0]}
    assert m.timings == {"t": [12.0]}
    summary = m.get_timing_summary("t")
    assert (summary.count, summary.total, summary.min, summary.max, summary.mean) == (
        1,
        12.0,
        12.0,
        12.0,
        12.0,
    )
    assert m.snapshot()["counters"] == {"c": 5}
    m.reset()
    assert m.get_counter("c") == 0 and m.get_timing_values("t") == []


def test_in_memory_stays_bounded_after_a_million_samples():
    m = InMemoryMetrics(max_samples=1000, seed=7)
    timing = m.timing
    for i in range(1_000_000):
        timing("lat", float(i))
    kept = m.get_timing_values("lat")
    assert len(kept) == 1000
    s = m.get_timing_summary("lat")
    assert s.count == 1_000_000
    assert (s.min, s.max) == (0.0, 999_999.0)
    assert s.total == sum(range(1_000_000))
    # a uniform reservoir: kept samples are spread over the whole run
    assert min(kept) < 100_000 and max(kept) > 900_000
    assert 350_000 < sum(kept) / len(kept) < 650_000


def test_in_memory_series_limit():
    m = InMemoryMetrics(max_series=3)
    for i in range(10):
        m.increment("c", 1, {"event_type": f"t{i}"})
    assert len(m.counters) == 3
    assert m.dropped_series == 7


def test_in_memory_thread_safety():
    m = InMemoryMetrics()
    c = MetricsCollector(m)

    def work() -> None:
        for _ in range(5000):
            c.record_handler_execution("a.b", "h", 0.001, True)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tags = {"event_type": "a.b", "handler_name": "h", "status": "success"}
    assert m.get_counter("event_bus_handler_executions_total", tags) == 20000
    assert c.get_snapshot()["handler_stats"]["h"]["total_calls"] == 20000
    assert len(c.get_snapshot()["handler_stats"]["h"]["latencies"]) == 100  # bounded


def test_callback_backend_receives_everything():
    seen: list[tuple[str, str, float, Any]] = []
    c = MetricsCollector(CallbackMetrics(lambda *a: seen.append(a)), prefix="bus")
    c.record_handler_execution("a.b", "h", 0.5, False)
    c.update_pending_count(2)
    assert seen == [
        (
            "counter",
            "bus_handler_executions_total",
            1.0,
            {**{"event_type": "a.b", "handler_name": "h"}, "status": "error"},
        ),
        (
            "timing",
            "bus_handler_latency_ms",
            500.0,
            {"event_type": "a.b", "handler_name": "h", "status": "error"},
        ),
        ("counter", "bus_handler_errors_total", 1.0, {"event_type": "a.b", "handler_name": "h"}),
        ("gauge", "bus_pending_events", 2.0, None),
    ]


def test_1x_record_emit_and_prefixless_names():
    m = InMemoryMetrics()
    c = MetricsCollector(m, prefix="")
    c.record_emit("a.b", "svc", 5.0)
    c.record_emit("a.b", "svc", 0.0, dropped=True)
    assert m.get_counter("events_emitted_total", {"event_type": "a.b"}) == 1
    assert m.get_counter("events_dropped_total", {"event_type": "a.b"}) == 1
    assert m.get_timing_values("emit_latency_ms", {"event_type": "a.b"}) == [5.0]


def test_noop_backend_is_skipped_and_backend_can_be_swapped():
    calls: list[Any] = []

    class Spy(NoopMetrics):
        pass

    class Recorder(MetricsBackend):
        def increment(self, name: str, value: int = 1, tags: Any = None) -> None:
            calls.append(name)

        gauge = histogram = timing = increment  # type: ignore[assignment]

    c = MetricsCollector(Spy())
    assert c.enabled  # subclasses of NoopMetrics might do something; only exact Noop is skipped
    c = MetricsCollector()
    c.record_event_emitted("a.b")
    c.backend = Recorder()
    c.record_event_emitted("a.b")
    assert calls == ["event_bus_events_emitted_total"]


def test_timing_context():
    with TimingContext() as t:
        sum(range(1000))
    assert t.elapsed_ms > 0
    assert t.elapsed_seconds == pytest.approx(t.elapsed_ms / 1000)


# -- Prometheus ---------------------------------------------------------------


def _families(text: str) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fam: Any, suffix: str = "", **labels: str) -> float:
    for s in fam.samples:
        if s.name == fam.name + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {fam.name}{suffix} {labels}")


def test_prometheus_exposition_parses_after_workload():
    pytest.importorskip("prometheus_client")
    from aperion_event_bus.metrics import PrometheusMetrics

    backend = PrometheusMetrics()
    workload(MetricsCollector(backend))
    text = backend.exposition()
    fams = _families(text)
    assert _value(fams["event_bus_events_emitted"], "_total", event_type="order.created") == 3
    assert fams["event_bus_events_emitted"].type == "counter"
    execs = fams["event_bus_handler_executions"]
    assert _value(execs, "_total", handler_name="h1", status="success") == 2
    assert _value(execs, "_total", handler_name="h2", status="timeout") == 1
    lat = fams["event_bus_handler_latency_seconds"]
    assert lat.type == "histogram"
    assert _value(lat, "_count", handler_name="h1", status="success") == 2
    assert _value(lat, "_sum", handler_name="h1", status="success") == pytest.approx(0.04)
    assert _value(fams["event_bus_pending_events"]) == 4
    assert _value(fams["event_bus_dlq_size"]) == 2
    assert _value(fams["event_bus_redactions"], "_total", redaction_type="email") == 3
    assert "text/plain" in backend.content_type


def test_prometheus_never_exports_high_cardinality_labels():
    pytest.importorskip("prometheus_client")
    from aperion_event_bus.metrics import PrometheusMetrics

    backend = PrometheusMetrics()
    backend.increment("custom_total", 1, {"event_type": "a.b", "event_id": "evt_123", "foo": "x"})
    backend.increment("custom_total", 1, {"event_type": "a.b", "correlation_id": "c-1"})
    backend.increment("custom_total", 1, {"other": "y"})  # label set stays fixed: event_type=""
    backend.increment("custom_total", -5)  # counters never go down; ignored
    text = backend.exposition()
    assert "evt_123" not in text and "c-1" not in text and "foo" not in text
    fam = _families(text)["custom"]
    assert _value(fam, "_total", event_type="a.b") == 2
    assert _value(fam, "_total", event_type="") == 1
    backend.gauge("custom_total", 1.0)  # type clash: ignored, no exception


def test_two_buses_separate_registries_and_shared_registry():
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry

    from aperion_event_bus.metrics import PrometheusMetrics

    # default: one private registry per backend, no clash
    a, b = PrometheusMetrics(), PrometheusMetrics()
    ca, cb = MetricsCollector(a), MetricsCollector(b)
    ca.record_event_emitted("x.y")
    cb.record_event_emitted("x.y")
    cb.record_event_emitted("x.y")
    assert _value(_families(a.exposition())["event_bus_events_emitted"], "_total") == 1
    assert _value(_families(b.exposition())["event_bus_events_emitted"], "_total") == 2

    # shared registry: the bus label keeps series apart
    registry = CollectorRegistry()
    p1 = PrometheusMetrics(registry, bus="orders")
    p2 = PrometheusMetrics(registry, bus="billing")
    c1, c2 = MetricsCollector(p1), MetricsCollector(p2)
    c1.record_event_emitted("x.y")
    c2.record_event_emitted("x.y")
    c2.record_handler_execution("x.y", "h", 0.1, True)
    c1.update_pending_count(3)
    c2.update_pending_count(7)
    assert p1.exposition() == p2.exposition()
    fams = _families(p1.exposition())
    emitted = fams["event_bus_events_emitted"]
    assert _value(emitted, "_total", bus="orders") == 1
    assert _value(emitted, "_total", bus="billing") == 1
    assert _value(fams["event_bus_pending_events"], bus="orders") == 3
    assert _value(fams["event_bus_pending_events"], bus="billing") == 7


def test_prometheus_in_default_registry_twice():
    pytest.importorskip("prometheus_client")
    from prometheus_client import REGISTRY

    from aperion_event_bus.metrics import PrometheusMetrics

    p1 = PrometheusMetrics(REGISTRY, bus="one")
    p2 = PrometheusMetrics(REGISTRY, bus="two")
    p1.increment("aperion_test_metric_total", 1, {"event_type": "a.b"})
    p2.increment("aperion_test_metric_total", 2, {"event_type": "a.b"})
    assert (
        REGISTRY.get_sample_value("aperion_test_metric_total", {"bus": "two", "event_type": "a.b"})
        == 2
    )


# -- OpenTelemetry metrics ------------------------------------------------------


def test_otel_metrics_backend_after_workload():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from aperion_event_bus.metrics import OTelMetrics

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    c = MetricsCollector(OTelMetrics(provider))
    workload(c)
    c.record_event_emitted("x.y")  # attributes cached per type; different type, new point
    data = reader.get_metrics_data()
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    points = {
        p.attributes.get("event_type"): p.value
        for p in metrics["event_bus_events_emitted"].data.data_points
    }
    assert points == {"order.created": 3, "x.y": 1}
    lat = metrics["event_bus_handler_latency"]
    assert lat.unit == "s"
    ok = [p for p in lat.data.data_points if p.attributes["status"] == "success"]
    assert ok[0].count == 2 and ok[0].sum == pytest.approx(0.04)
    (pending,) = metrics["event_bus_pending_events"].data.data_points
    assert pending.value == 4
    provider.shutdown()
