"""Latest value per metric series, accumulated like the Collector's prometheus exporter.

Mirrors ``exporter/prometheusexporter/accumulator.go``: cumulative points replace older
ones, monotonic delta sums and delta histograms are added up into cumulative values,
delta non-monotonic sums and unspecified temporality are dropped, and a point flagged
"no recorded value" removes its series.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    DataPointFlags,
    Metric,
    ResourceMetrics,
)

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
NO_RECORDED_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK


def value_as_string(value: AnyValue) -> str:
    """``pcommon.Value.AsString``: how the Collector turns attribute values into labels."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return _es6_number(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind in ("array_value", "kvlist_value"):
        return json.dumps(_plain(value), separators=(",", ":"))
    return ""


def _plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, kind) if kind else None


def _es6_number(number: float) -> str:
    """Go's float64AsString: ES6 number-to-string (plain unless very large or small)."""
    if math.isnan(number) or math.isinf(number):
        return f"json: unsupported value: {number}"
    if number == int(number) and abs(number) < 1e21:
        return str(int(number))
    if 1e-6 <= abs(number) < 1e21:
        return format(Decimal(repr(number)), "f")
    mantissa, exponent = f"{number!r}".split("e")
    return f"{mantissa}e{int(exponent):+d}"


def attributes_as_labels(attributes: Iterable[KeyValue]) -> tuple[tuple[str, str], ...]:
    """Attribute key/value strings, in the order received (first key wins)."""
    seen: dict[str, str] = {}
    for kv in attributes:
        seen.setdefault(kv.key, value_as_string(kv.value))
    return tuple(seen.items())


@dataclass
class Series:
    """One accumulated time series, with everything needed to render it."""

    name: str
    description: str
    unit: str
    kind: str  # "gauge" | "sum" | "histogram" | "summary"
    monotonic: bool
    attributes: tuple[tuple[str, str], ...]
    resource: tuple[tuple[str, str], ...]
    scope_name: str
    scope_version: str
    scope_schema_url: str
    scope_attributes: tuple[tuple[str, str], ...]
    timestamp_ns: int = 0
    start_ns: int = 0
    value: float = 0.0  # gauge / sum
    bounds: tuple[float, ...] = ()
    bucket_counts: tuple[int, ...] = ()
    sum: float = 0.0
    count: int = 0
    quantiles: tuple[tuple[float, float], ...] = ()
    updated: float = 0.0

    @property
    def job(self) -> str | None:
        """``service.namespace/service.name`` (or just the name), as the exporter does."""
        name = _lookup(self.resource, "service.name")
        if name is None:
            return None
        namespace = _lookup(self.resource, "service.namespace")
        return f"{namespace}/{name}" if namespace is not None else name

    @property
    def instance(self) -> str | None:
        """``service.instance.id``, the exporter's ``instance`` label."""
        return _lookup(self.resource, "service.instance.id")


@dataclass
class MetricsStats:
    points_received: int = 0
    points_dropped: int = 0  # unsupported type or temporality, stale or misaligned


@dataclass
class MetricsStore:
    """Accumulates OTLP metrics into the latest value per series."""

    expiration_seconds: float = 300.0
    clock: Callable[[], float] = time.monotonic
    stats: MetricsStats = field(default_factory=MetricsStats)
    _series: dict[tuple[Any, ...], Series] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._series)

    def add(self, resource_metrics: Iterable[ResourceMetrics]) -> int:
        """Accumulate one export request; return how many points were rejected."""
        rejected = 0
        now = self.clock()
        for rm in resource_metrics:
            resource = attributes_as_labels(rm.resource.attributes)
            for sm in rm.scope_metrics:
                scope = (
                    sm.scope.name,
                    sm.scope.version,
                    sm.schema_url,
                    attributes_as_labels(sm.scope.attributes),
                )
                for metric in sm.metrics:
                    rejected += self._add_metric(metric, resource, scope, now)
        self.stats.points_dropped += rejected
        return rejected

    def collect(self) -> list[Series]:
        """Live series (expired ones are forgotten, as with ``metric_expiration``)."""
        if self.expiration_seconds > 0:
            horizon = self.clock() - self.expiration_seconds
            for key in [k for k, s in self._series.items() if s.updated < horizon]:
                del self._series[key]
        return list(self._series.values())

    def _add_metric(self, metric: Metric, resource: Any, scope: Any, now: float) -> int:
        kind = metric.WhichOneof("data")
        if kind is None:
            return 0
        data = getattr(metric, kind)
        points = data.data_points
        self.stats.points_received += len(points)
        if kind == "exponential_histogram":
            return len(points)  # the text exposition format has no native histograms
        temporality = getattr(data, "aggregation_temporality", CUMULATIVE)
        monotonic = bool(getattr(data, "is_monotonic", False))
        if kind == "sum" and (
            temporality not in (DELTA, CUMULATIVE) or (temporality == DELTA and not monotonic)
        ):
            return len(points)
        if kind == "histogram" and temporality not in (DELTA, CUMULATIVE):
            return len(points)
        rejected = 0
        for point in points:
            attributes = attributes_as_labels(point.attributes)
            job_instance = (
                _lookup(resource, "service.namespace"),
                _lookup(resource, "service.name"),
                _lookup(resource, "service.instance.id"),
            )
            key = (kind, metric.name, scope, tuple(sorted(attributes)), job_instance)
            if point.flags & NO_RECORDED_VALUE:
                self._series.pop(key, None)
                continue
            previous = self._series.get(key)
            series = Series(
                name=metric.name,
                description=metric.description,
                unit=metric.unit,
                kind=kind,
                monotonic=monotonic,
                attributes=attributes,
                resource=resource,
                scope_name=scope[0],
                scope_version=scope[1],
                scope_schema_url=scope[2],
                scope_attributes=scope[3],
                timestamp_ns=point.time_unix_nano,
                start_ns=point.start_time_unix_nano,
                updated=now,
            )
            if not self._fill(series, kind, point, previous, temporality):
                rejected += 1
                continue
            self._series[key] = series
        return rejected

    @staticmethod
    def _fill(
        series: Series, kind: str, point: Any, previous: Series | None, temporality: int
    ) -> bool:
        """Copy the point's values into ``series``; False when the point is dropped."""
        if (
            previous is not None
            and temporality == CUMULATIVE
            and series.timestamp_ns < previous.timestamp_ns
        ):
            return False  # out of order: keep the newer point
        if kind in ("gauge", "sum"):
            which = point.WhichOneof("value")
            series.value = float(point.as_int if which == "as_int" else point.as_double)
            if kind == "sum" and temporality == DELTA and previous is not None:
                if series.timestamp_ns < previous.timestamp_ns:
                    return False
                if series.start_ns == previous.timestamp_ns:
                    series.value += previous.value
                    series.start_ns = previous.start_ns
            return True
        if kind == "summary":
            series.sum, series.count = point.sum, point.count
            series.quantiles = tuple((q.quantile, q.value) for q in point.quantile_values)
            return True
        # histogram
        series.bounds = tuple(point.explicit_bounds)
        series.bucket_counts = tuple(point.bucket_counts)
        series.sum, series.count = point.sum, point.count
        if temporality == DELTA and previous is not None:
            if series.start_ns != previous.timestamp_ns:
                # Misaligned: a restart if it starts later, else a conflicting writer.
                return series.start_ns > previous.timestamp_ns
            if series.bounds == previous.bounds and len(series.bucket_counts) == len(
                previous.bucket_counts
            ):
                series.bucket_counts = tuple(
                    a + b for a, b in zip(series.bucket_counts, previous.bucket_counts, strict=True)
                )
                series.sum += previous.sum
                series.count += previous.count
                series.start_ns = previous.start_ns
        return True


def _lookup(pairs: tuple[tuple[str, str], ...], key: str) -> str | None:
    """Value of ``key`` in (key, value) pairs, or None."""
    for k, v in pairs:
        if k == key:
            return v
    return None
