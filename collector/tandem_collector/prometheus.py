"""Prometheus text exposition of received metrics, as the Collector's exporter writes it.

Naming follows ``prometheus/otlptranslator`` with the exporter's default
``UnderscoreEscapingWithSuffixes`` strategy; labels and ``target_info`` follow
``exporter/prometheusexporter/collector.go``; number formatting follows
``prometheus/common/expfmt`` (Go's ``strconv.FormatFloat(f, 'g', -1, 64)``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tandem_collector.metrics_store import MetricsStore, Series

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = logging.getLogger(__name__)

# OTLP (UCUM) units to Prometheus unit words, from otlptranslator's unitMap.
_UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
_PER_UNITS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9:]+")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9]+")

GAUGE, COUNTER, HISTOGRAM, SUMMARY = "gauge", "counter", "histogram", "summary"
MONOTONIC_COUNTER, NON_MONOTONIC_COUNTER = "monotonic_counter", "non_monotonic_counter"


def _clean_unit(unit: str) -> str:
    return _INVALID_NAME_CHARS.sub("_", unit).lstrip("_")


def _unit_suffixes(unit: str) -> tuple[str, str]:
    """Main and ``per_`` unit words; annotations in braces (``{request}``) are dropped."""
    main_otel, _, per_otel = unit.partition("/")
    main_otel, per_otel = main_otel.strip(), per_otel.strip()
    main = _UNITS.get(main_otel, main_otel) if main_otel and not set("{}") & set(main_otel) else ""
    per = ""
    if per_otel and not set("{}") & set(per_otel):
        per = "per_" + _PER_UNITS.get(per_otel, per_otel)
    return main, per


def metric_name(name: str, unit: str, otel_type: str) -> str:
    """Prometheus name of an OTLP metric: tokens joined by ``_``, unit and type suffixes.

    ``otel_type`` is otlptranslator's metric type: one of ``gauge``, ``monotonic_counter``,
    ``non_monotonic_counter``, ``histogram``, ``exponential_histogram``, ``summary``.
    """
    tokens = [t for t in _INVALID_NAME_CHARS.split(name) if t]
    main, per = (_clean_unit(s) for s in _unit_suffixes(unit))
    if main in tokens:
        main = ""
    if per == "per_":
        per = ""
    else:
        per = per.removesuffix("_")
        if per in tokens:
            per = ""
    if per:
        main = main.removesuffix("_")
    if main:
        tokens.append(main)
    if per:
        tokens.append(per)
    if otel_type == MONOTONIC_COUNTER:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    # Only gauges: some receivers wrongly give counters of things the unit "1".
    if unit == "1" and otel_type == GAUGE:
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    result = "_".join(tokens)
    if result[:1].isdigit():
        result = "_" + result
    return result


def label_name(key: str) -> str:
    """Prometheus label name of an attribute key (invalid runs become one ``_``)."""
    reserved = len(key) >= 4 and key.startswith("__") and key.endswith("__")
    core = key[2:-2] if reserved else key
    name = _INVALID_LABEL_CHARS.sub("_", core)
    if reserved:
        return f"__{name}__"
    if name[:1].isdigit():
        name = "key_" + name
    return name


def format_float(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` with expfmt's special cases."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    _, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    point = len(text) + int(exponent)  # digits before the decimal point
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:  # shortest formatting switches to %e at precision 6
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{text}"
    if point >= len(text):
        return sign + text + "0" * (point - len(text))
    return f"{sign}{text[:point]}.{text[point:]}"


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


@dataclass
class Sample:
    """One exposition line: ``name{labels} value`` (labels already ordered)."""

    suffix: str
    labels: tuple[tuple[str, str], ...]
    value: str


@dataclass
class Family:
    """A metric family: HELP, TYPE and its metrics' samples."""

    name: str
    type: str
    help: str
    metrics: list[tuple[tuple[tuple[str, str], ...], list[Sample]]] = field(default_factory=list)

    def add_value(self, labels: dict[str, str], value: float) -> None:
        ordered = tuple(sorted(labels.items()))
        self.metrics.append((ordered, [Sample("", ordered, format_float(value))]))

    def render(self) -> str:
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.type}"]
        # client_golang sorts a family's metrics by label count, then label values.
        for _, samples in sorted(self.metrics, key=lambda m: (len(m[0]), [v for _, v in m[0]])):
            for sample in samples:
                labels = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in sample.labels)
                body = f"{{{labels}}}" if labels else ""
                lines.append(f"{self.name}{sample.suffix}{body} {sample.value}")
        return "\n".join(lines) + "\n"


def _types(series: Series) -> tuple[str, str]:
    """(otlptranslator metric type, exposed Prometheus type) of a series."""
    if series.kind == "sum":
        return (MONOTONIC_COUNTER, COUNTER) if series.monotonic else (NON_MONOTONIC_COUNTER, GAUGE)
    return series.kind, {"gauge": GAUGE, "histogram": HISTOGRAM, "summary": SUMMARY}[series.kind]


def _series_labels(series: Series) -> dict[str, str]:
    """Point attributes, scope labels, then job/instance; duplicates are an error."""
    keys: list[str] = []
    values: list[str] = []
    for key, value in series.attributes:
        keys.append(label_name(key))
        values.append(value)
    for key, value in series.scope_attributes:
        keys.append(label_name("otel_scope_" + key))
        values.append(value)
    keys += ["otel_scope_name", "otel_scope_version", "otel_scope_schema_url"]
    values += [series.scope_name, series.scope_version, series.scope_schema_url]
    if series.job is not None:
        keys.append("job")
        values.append(series.job)
    if series.instance is not None:
        keys.append("instance")
        values.append(series.instance)
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate label names {sorted(keys)}")
    return dict(zip(keys, values, strict=True))


def _series_samples(series: Series, labels: dict[str, str]) -> list[Sample]:
    ordered = tuple(sorted(labels.items()))
    if series.kind in ("gauge", "sum"):
        return [Sample("", ordered, format_float(series.value))]
    samples: list[Sample] = []
    if series.kind == "summary":
        for quantile, value in series.quantiles:
            samples.append(
                Sample("", (*ordered, ("quantile", format_float(quantile))), format_float(value))
            )
    else:
        # Cumulative buckets over the distinct, sorted bounds; the overflow bucket is
        # implied by +Inf = count (exactly as convertDoubleHistogram does).
        first_index: dict[float, int] = {}
        for index, bound in enumerate(series.bounds):
            first_index.setdefault(bound, index)
        cumulative = 0
        for bound in sorted(first_index):
            index = first_index[bound]
            if index < len(series.bucket_counts):
                cumulative += series.bucket_counts[index]
            if bound == math.inf:
                continue
            samples.append(
                Sample("_bucket", (*ordered, ("le", format_float(bound))), str(cumulative))
            )
        samples.append(Sample("_bucket", (*ordered, ("le", "+Inf")), str(series.count)))
    samples.append(Sample("_sum", ordered, format_float(series.sum)))
    samples.append(Sample("_count", ordered, str(series.count)))
    return samples


def _target_info(series_list: Iterable[Series]) -> Family | None:
    """One ``target_info`` per (job, instance), labelled with the other resource attributes."""
    family = Family("target_info", GAUGE, "Target metadata")
    seen: set[tuple[str, str]] = set()
    for series in series_list:
        job, instance = series.job, series.instance
        if not job or not instance or (job, instance) in seen:
            continue
        seen.add((job, instance))
        labels: dict[str, str] = {}
        for key, value in series.resource:
            if key in ("service.name", "service.namespace", "service.instance.id"):
                continue
            name = label_name(key)
            labels[name] = f"{labels[name]};{value}" if name in labels else value
        labels["job"], labels["instance"] = job, instance
        family.add_value(labels, 1)
    return family if family.metrics else None


def render(metrics: MetricsStore, extra: Iterable[Family] = ()) -> str:
    """The whole ``/metrics`` page: received metrics, ``target_info`` and ``extra``."""
    series_list = metrics.collect()
    families: dict[str, Family] = {}
    for series in series_list:
        otel_type, prom_type = _types(series)
        name = metric_name(series.name, series.unit, otel_type)
        try:
            labels = _series_labels(series)
        except ValueError as exc:
            log.warning("dropping series of %s: %s", name, exc)
            continue
        family = families.get(name)
        if family is None:
            family = families[name] = Family(name, prom_type, series.description)
        elif family.type != prom_type:
            log.warning(
                "dropping %s series: type %s conflicts with %s", name, prom_type, family.type
            )
            continue
        family.metrics.append((tuple(sorted(labels.items())), _series_samples(series, labels)))
    target_info = _target_info(series_list)
    if target_info is not None:
        families.setdefault(target_info.name, target_info)
    for family in extra:
        families.setdefault(family.name, family)
    return "".join(families[name].render() for name in sorted(families))


def create_prometheus_app(
    metrics: MetricsStore, extra: Callable[[], Iterable[Family]] = lambda: ()
) -> Starlette:
    """Starlette app serving ``GET /metrics``; ``extra()`` yields self-metric families."""

    async def scrape(_: Request) -> Response:
        return Response(render(metrics, extra()), media_type=CONTENT_TYPE)

    return Starlette(routes=[Route("/metrics", scrape, methods=["GET"])])
