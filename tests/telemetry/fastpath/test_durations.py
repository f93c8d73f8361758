"""tandem_telemetry.durations: a DurationHistogram must export what Histogram.record would have."""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import attach, detach
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal import _MeterConfig
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.trace import TracerProvider

from tandem_telemetry.bootstrap import HTTP_DURATION_BUCKETS
from tandem_telemetry.fastpath import DurationHistogram

# Differential tests of the fast path: they hold it to the SDK, on the releases it lists.
pytestmark = pytest.mark.fast_path

SETS = [
    {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "http.route": "/api/work",
    },
    {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.response.status_code": 503,
        "error.type": "503",
    },
    {
        "http.request.method": "POST",
        "server.address": "worker",
        "server.port": 8081,
        "http.response.status_code": 200,
    },
    {
        "http.request.method": "POST",
        "server.address": "worker",
        "server.port": 8081,
        "http.response.status_code": True,
    },
]


def histogram(**provider_args: Any) -> tuple[Any, InMemoryMetricReader, MeterProvider]:
    reader = provider_args.pop("reader", None) or InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], **provider_args)
    instrument = provider.get_meter("tandem_telemetry").create_histogram(
        "http.server.request.duration",
        unit="s",
        explicit_bucket_boundaries_advisory=HTTP_DURATION_BUCKETS,
    )
    return instrument, reader, provider


def points(reader: InMemoryMetricReader) -> list[tuple[Any, ...]]:
    data = reader.get_metrics_data()
    if data is None:
        return []
    out = []
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    exemplars = sorted((e.value, e.span_id, e.trace_id) for e in point.exemplars)
                    attributes = tuple(
                        sorted((k, type(v).__name__, v) for k, v in point.attributes.items())
                    )
                    out.append(
                        (
                            metric.name,
                            attributes,
                            point.count,
                            point.sum,
                            point.min,
                            point.max,
                            tuple(point.bucket_counts),
                            exemplars,
                        )
                    )
    return sorted(out)


def record_both(
    calls: list[tuple[float, dict[str, Any]]], **provider_args: Any
) -> tuple[list[Any], list[Any]]:
    sdk, sdk_reader, _ = histogram(**dict(provider_args))
    ours_instrument, ours_reader, _ = histogram(**dict(provider_args))
    ours = DurationHistogram(ours_instrument)
    span = TracerProvider().get_tracer("t").start_span("request")
    token = attach(trace.set_span_in_context(span))
    try:
        results = []
        for reader_pair in range(2):  # twice: collection between the halves
            for amount, attributes in calls[reader_pair::2]:
                sdk.record(amount, attributes)
                ours.record(amount, dict(attributes))
            results.append((points(sdk_reader), points(ours_reader)))
    finally:
        detach(token)
    return results[0], results[1]


def workload(n: int = 600) -> list[tuple[float, dict[str, Any]]]:
    rng = random.Random(7)
    return [
        (rng.choice([0.0001, 0.004, 0.02, 0.3, 2.0, 12.0, rng.random()]), dict(rng.choice(SETS)))
        for _ in range(n)
    ]


def test_cumulative_points_and_exemplars_match_the_sdk() -> None:
    first, second = record_both(workload())
    for sdk_points, our_points in (first, second):
        assert our_points == sdk_points
        assert sum(point[2] for point in our_points) > 0
    # True and 1 are different attribute values, as in the SDK.
    assert len(second[1]) == len(SETS)


def test_delta_temporality_falls_back_to_the_sdk_path_and_matches() -> None:
    reader = InMemoryMetricReader(
        preferred_temporality={SdkHistogram: AggregationTemporality.DELTA}
    )
    ours_instrument, ours_reader, _ = histogram(reader=reader)
    ours = DurationHistogram(ours_instrument)
    delta_sdk_reader = InMemoryMetricReader(
        preferred_temporality={SdkHistogram: AggregationTemporality.DELTA}
    )
    delta_sdk, _, _ = histogram(reader=delta_sdk_reader)
    for round_ in range(3):
        for amount, attributes in workload(50):
            delta_sdk.record(amount, attributes)
            ours.record(amount, dict(attributes))
        assert points(ours_reader) == points(delta_sdk_reader), round_


def test_a_view_that_filters_attribute_keys_is_honoured() -> None:
    view = View(
        instrument_name="http.server.request.duration", attribute_keys={"http.request.method"}
    )
    _, second = record_both(workload(100), views=[view])
    assert second[1] == second[0]
    assert {point[1] for point in second[1]} == {
        (("http.request.method", "str", "GET"),),
        (("http.request.method", "str", "POST"),),
    }


def test_a_disabled_meter_records_nothing() -> None:
    instrument, reader, provider = histogram()
    ours = DurationHistogram(instrument)
    ours.record(0.1, dict(SETS[0]))
    ours.record(0.1, dict(SETS[0]))
    provider._set_meter_configurator(
        meter_configurator=lambda scope: _MeterConfig(is_enabled=False)
    )
    ours.record(0.1, dict(SETS[0]))
    [point] = points(reader)
    assert point[2] == 2


@pytest.mark.parametrize("amount", [-1.0, float("nan"), float("inf")])
def test_invalid_amounts_are_refused_as_the_sdk_refuses_them(amount: float) -> None:
    instrument, reader, _ = histogram()
    ours = DurationHistogram(instrument)
    ours.record(0.5, dict(SETS[0]))
    ours.record(amount, dict(SETS[0]))
    [point] = points(reader)
    assert point[2] == 1
