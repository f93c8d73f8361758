"""Request duration histograms: the SDK's histogram, with each attribute set prepared once.

`Histogram.record` validates, copies and hashes the attribute set on every
call, then looks its aggregation up: about 10 µs for the five attributes of
http.server.request.duration, on every request. The middleware and the
client record a handful of distinct sets (method, route, status...) over
and over. `DurationHistogram` takes the SDK's path the first time it sees
a set, then hands later measurements straight to the aggregation the SDK
made for it, with the same exemplar decision. Whenever that shortcut's
conditions do not hold (delta temporality, a view that filters attribute
keys, a disabled meter, a new reader, an aggregation replaced), the call
takes the SDK's path. tests/telemetry/test_durations.py holds the
exported points to the SDK's.
"""

from __future__ import annotations

from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry.context import get_current
from opentelemetry.metrics import Histogram
from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes
from opentelemetry.sdk.metrics._internal.measurement import Measurement

_INFINITY = float("inf")
# Beyond this many distinct attribute sets, new ones take the SDK's path.
PREPARED_SETS_LIMIT = 512

_Target = tuple[Any, Any, Any]  # (view-instrument match, aggregation key, aggregation)


class DurationHistogram:
    """Records into an SDK histogram like `Histogram.record`, faster for repeated attribute sets."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        consumer = getattr(histogram, "_measurement_consumer", None)
        self._consumer = consumer
        self._storages = getattr(consumer, "_reader_storages", None)
        self._prepared: dict[tuple[tuple[str, Any], ...], tuple[Mapping[str, Any], list[_Target]]] = {}

    def record(self, amount: float, attributes: dict[str, Any]) -> None:
        histogram = self._histogram
        key = tuple(attributes.items())
        prepared = self._prepared.get(key)
        if prepared is None or not 0.0 <= amount < _INFINITY or not histogram._is_enabled():  # type: ignore[attr-defined]  # noqa: SLF001
            # The SDK's path: it also warns about, and drops, negative and non-finite amounts.
            histogram.record(amount, attributes)
            if prepared is None:
                self._prepare(key, attributes)
            return
        if self._consumer._reader_storages is not self._storages:  # type: ignore[union-attr]  # noqa: SLF001
            # A reader was added or removed: prepare the sets again.
            self._prepared.clear()
            self._storages = self._consumer._reader_storages  # type: ignore[union-attr]  # noqa: SLF001
            histogram.record(amount, attributes)
            return
        cleaned, targets = prepared
        context = get_current()
        measurement = Measurement(amount, time_ns(), histogram, context)  # type: ignore[arg-type]
        # Validated when the set was prepared; the aggregation keeps a reference, as it would to a copy.
        object.__setattr__(measurement, "attributes", cleaned)
        sample = self._consumer._sdk_config.exemplar_filter.should_sample(amount, measurement.time_unix_nano, cleaned, context)  # type: ignore[union-attr]  # noqa: SLF001
        for match, aggregation_key, aggregation in targets:
            if match._attributes_aggregation.get(aggregation_key) is aggregation:  # noqa: SLF001
                aggregation.aggregate(measurement, sample)
            else:
                match.consume_measurement(measurement, sample)
                self._prepared.pop(key, None)

    def _prepare(self, key: tuple[tuple[str, Any], ...], attributes: dict[str, Any]) -> None:
        """Remember the aggregations the SDK made for this set, when the shortcut is safe for all of them."""
        if self._storages is None or len(self._prepared) >= PREPARED_SETS_LIMIT:
            return
        cleaned = Measurement(0, 0, self._histogram, get_current(), attributes).attributes  # type: ignore[arg-type]
        if cleaned is None:
            return
        aggregation_key = _hash_attributes(dict(cleaned))
        targets: list[_Target] = []
        for storage in self._storages.values():
            for match in storage._get_or_init_view_instrument_match(self._histogram):  # noqa: SLF001
                aggregation = match._attributes_aggregation.get(aggregation_key)  # noqa: SLF001
                if match._reset_on_collect or match._view._attribute_keys is not None or aggregation is None:  # noqa: SLF001
                    return
                targets.append((match, aggregation_key, aggregation))
        self._prepared[key] = (cleaned, targets)
