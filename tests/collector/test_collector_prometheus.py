"""Prometheus exposition of received metrics, as the Collector's exporter does it."""

from __future__ import annotations

import httpx
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, ResourceMetrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tandem_collector.metrics_store import MetricsStore
from tandem_collector.prometheus import format_float, label_name, metric_name, render
from tests.collector.helpers import kv

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
COMMON = (
    'instance="gw-1",job="tandem/gateway",otel_scope_name="tandem.test",'
    'otel_scope_schema_url="",otel_scope_version="1.2.3"'
)


def test_sdk_histogram_over_grpc_is_scraped_like_a_collector(collector):
    addresses = collector.addresses
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=addresses.grpc_endpoint, insecure=True),
        export_interval_millis=3_600_000,
    )
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create(
            {
                "service.name": "gateway",
                "service.namespace": "tandem",
                "service.instance.id": "gw-1",
            }
        ),
    )
    meter = provider.get_meter("tandem.test", "1.2.3")
    histogram = meter.create_histogram(
        "http.server.request.duration",
        unit="s",
        description="Duration of HTTP requests.",
        explicit_bucket_boundaries_advisory=[0.005, 0.01, 0.025, 0.05, 0.1],
    )
    for seconds in (0.003, 0.007, 0.02, 0.5):
        histogram.record(seconds, {"http.route": "/api/work", "http.request.method": "GET"})
    meter.create_counter("work.items", unit="{item}").add(3, {"outcome": "ok"})
    meter.create_up_down_counter("queue.depth").add(-2)
    meter.create_gauge("cpu.utilization", unit="1").set(0.25)
    provider.shutdown()

    response = httpx.get(f"{addresses.prometheus_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = response.text.splitlines()
    labels = f'http_request_method="GET",http_route="/api/work",{COMMON}'
    name = "http_server_request_duration_seconds"
    start = lines.index(f"# HELP {name} Duration of HTTP requests.")
    assert lines[start + 1 : start + 10] == [
        f"# TYPE {name} histogram",
        f'{name}_bucket{{{labels},le="0.005"}} 1',
        f'{name}_bucket{{{labels},le="0.01"}} 2',
        f'{name}_bucket{{{labels},le="0.025"}} 3',
        f'{name}_bucket{{{labels},le="0.05"}} 3',
        f'{name}_bucket{{{labels},le="0.1"}} 3',
        f'{name}_bucket{{{labels},le="+Inf"}} 4',
        f"{name}_sum{{{labels}}} 0.53",
        f"{name}_count{{{labels}}} 4",
    ]
    assert "# TYPE work_items_total counter" in lines
    assert f'work_items_total{{{COMMON},outcome="ok"}} 3' in lines
    assert "# TYPE queue_depth gauge" in lines and f"queue_depth{{{COMMON}}} -2" in lines
    assert f"cpu_utilization_ratio{{{COMMON}}} 0.25" in lines
    assert (
        'target_info{instance="gw-1",job="tandem/gateway",telemetry_sdk_language="python",'
        'telemetry_sdk_name="opentelemetry",'
    ) in response.text
    names = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert names == sorted(names)  # families sorted by name, as client_golang gathers


# (OTLP name, unit, otlptranslator type) -> Prometheus name, as the Collector's exporter names them.
METRIC_NAMES = {
    ("http.server.request.duration", "s", "histogram"): "http_server_request_duration_seconds",
    ("requests", "1", "monotonic_counter"): "requests_total",
    ("requests.total", "", "monotonic_counter"): "requests_total",  # no second _total
    ("work.items", "{item}", "monotonic_counter"): "work_items_total",  # annotations dropped
    ("memory.usage.bytes", "By", "gauge"): "memory_usage_bytes",  # no repeated unit
    ("cpu.utilization", "1", "gauge"): "cpu_utilization_ratio",
    ("queue.depth", "1", "non_monotonic_counter"): "queue_depth",
    ("throughput", "By/s", "gauge"): "throughput_bytes_per_second",
    ("odd--name..x", "", "gauge"): "odd_name_x",
    ("2xx", "", "gauge"): "_2xx",
}


def test_metric_names():
    assert {key: metric_name(*key) for key in METRIC_NAMES} == METRIC_NAMES


def test_label_names():
    cases = {"http.route": "http_route", "a..b": "a_b", "2xx": "key_2xx", "__meta__": "__meta__"}
    assert {key: label_name(key) for key in cases} == cases


# Go's strconv.FormatFloat(v, 'g', -1, 64), as expfmt writes sample values.
GO_FLOATS = {
    0.0: "0",
    -1.0: "-1",
    0.005: "0.005",
    100000.0: "100000",
    1e6: "1e+06",
    1234567.0: "1.234567e+06",
    0.0001: "0.0001",
    0.00001: "1e-05",
    float("inf"): "+Inf",
    float("-inf"): "-Inf",
}


def test_go_float_formatting():
    assert {value: format_float(value) for value in GO_FLOATS} == GO_FLOATS
    assert format_float(float("nan")) == "NaN"


def _sum_request(value: int, start: int, end: int, temporality: int, monotonic: bool = True):
    rm = ResourceMetrics()
    rm.resource.attributes.append(kv("service.name", "worker"))
    metric = rm.scope_metrics.add().metrics.add(name="jobs.done", unit="1")
    metric.sum.aggregation_temporality = temporality
    metric.sum.is_monotonic = monotonic
    point = metric.sum.data_points.add(as_int=value, start_time_unix_nano=start, time_unix_nano=end)
    point.attributes.append(kv("queue", "default"))
    return ExportMetricsServiceRequest(resource_metrics=[rm])


def _delta_histogram(counts: list[int], start: int, end: int, total: float):
    rm = ResourceMetrics()
    rm.resource.attributes.append(kv("service.name", "worker"))
    metric = rm.scope_metrics.add().metrics.add(name="work.duration", unit="ms")
    metric.histogram.aggregation_temporality = DELTA
    metric.histogram.data_points.add(
        start_time_unix_nano=start,
        time_unix_nano=end,
        explicit_bounds=[10, 100],
        bucket_counts=counts,
        count=sum(counts),
        sum=total,
    )
    return ExportMetricsServiceRequest(resource_metrics=[rm])


def test_cumulative_keeps_latest_and_delta_accumulates():
    store = MetricsStore()
    store.add(_sum_request(5, 1, 10, CUMULATIVE).resource_metrics)
    store.add(_sum_request(3, 1, 5, CUMULATIVE).resource_metrics)  # older: ignored
    assert (
        'jobs_done_total{job="worker",otel_scope_name="",otel_scope_schema_url="",'
        'otel_scope_version="",queue="default"} 5\n' in render(store)
    )

    delta = MetricsStore()
    delta.add(_delta_histogram([1, 2, 0], 0, 10, 60.0).resource_metrics)
    delta.add(_delta_histogram([0, 1, 1], 10, 20, 250.0).resource_metrics)
    text = render(delta)
    assert (
        'work_duration_milliseconds_bucket{job="worker",otel_scope_name="",'
        'otel_scope_schema_url="",otel_scope_version="",le="100"} 4\n' in text
    )
    assert "work_duration_milliseconds_count{" in text and "} 5\n" in text
    assert "work_duration_milliseconds_sum{" in text and "} 310\n" in text


def test_unrepresentable_points_are_rejected_and_counted():
    store = MetricsStore()
    assert store.add(_sum_request(1, 0, 1, DELTA, monotonic=False).resource_metrics) == 1
    assert len(store) == 0
    assert store.stats.points_dropped == 1


def test_series_expire_after_metric_expiration():
    now = [0.0]
    store = MetricsStore(expiration_seconds=60, clock=lambda: now[0])
    store.add(_sum_request(5, 1, 10, CUMULATIVE).resource_metrics)
    now[0] = 59
    assert len(store.collect()) == 1
    now[0] = 61
    assert store.collect() == [] and "jobs_done" not in render(store)
