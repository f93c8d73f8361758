"""The fast path: three hot spots of the SDK's public path, done with its internals; version-gated.

Tandem's default path uses OpenTelemetry's public API only (see bootstrap).
This module replaces three costly steps with code that reads and writes
private members of opentelemetry-sdk and its OTLP exporter:

- span start: `RequestTracer` starts the SDK's own `Span` without the
  tracer's generic per-attribute validation (9.6 against 18 µs a server span);
- duration records: `DurationHistogram` hands repeated attribute sets straight
  to the aggregation the SDK made for them (4.6 against 10 µs);
- OTLP encoding: `FastOTLPSpanExporter` writes the ExportTraceServiceRequest
  bytes directly (4 against 40 µs a span).

Private members change without notice, so the fast path is used only on
the releases in TESTED_RELEASES, the ones whose differential tests
(tests/telemetry/test_spans.py, test_durations.py, test_otlp.py: the output
held to the SDK's own, field for field and byte for byte) ran in CI.
TANDEM_FAST_PATH=auto (the default) uses it there and the public path
anywhere else; =on refuses to start elsewhere; =off never loads this module.
Where the figures come from: docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.metadata

# The releases whose differential tests ran in CI: the version uv.lock pins.
# Each package below must be at one of them. Add a release only after the
# three test files pass against it.
TESTED_RELEASES = ("1.45.2",)
PACKAGES = (
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-exporter-otlp-proto-common",
    "opentelemetry-proto",
)


def installed_releases() -> dict[str, str]:
    return {package: importlib.metadata.version(package) for package in PACKAGES}


def unsupported_reason() -> str | None:
    """Why the fast path must not run with the installed packages, or None when it may."""
    untested = {
        package: version
        for package, version in installed_releases().items()
        if version not in TESTED_RELEASES
    }
    if not untested:
        return None
    found = ", ".join(f"{package} {version}" for package, version in untested.items())
    tested = ", ".join(TESTED_RELEASES)
    return f"its differential tests ran against {tested} only, and this has {found}"


# Checked before the imports below: on another release they may not exist.
if (_reason := unsupported_reason()) is not None:
    raise ImportError(_reason)

# ruff: noqa: E402 - the imports that follow need a tested release
import logging
import threading
from collections.abc import Mapping, Sequence
from contextlib import suppress
from struct import Struct
from time import time_ns
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context, get_current
from opentelemetry.exporter.otlp.proto.common._internal import _encode_value
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes
from opentelemetry.sdk.metrics._internal.instrument import Histogram as SDKHistogram
from opentelemetry.sdk.metrics._internal.measurement import Measurement
from opentelemetry.sdk.metrics._internal.measurement_consumer import (
    SynchronousMeasurementConsumer,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, Tracer
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

logger = logging.getLogger(__name__)


# --- Span start -----------------------------------------------------------------

_PLAIN_TYPES = frozenset({str, int, float, bool})
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


def _plain(attributes: Mapping[str, Any]) -> bool:
    """True when the SDK's validation would keep every pair unchanged."""
    for key, value in attributes.items():
        if type(key) is not str or not key or type(value) not in _PLAIN_TYPES:
            return False
    return True


class RequestSpan(Span):
    """An SDK span whose plain attributes skip the per-value validation.

    At its end it hands the processors the SDK's own ReadableSpan snapshot,
    as every SDK span does.
    """

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        bounded = self._attributes
        if (
            self._end_time is None
            # Always so for a span RequestTracer started; the check narrows the SDK's type.
            and isinstance(bounded, BoundedAttributes)
            and bounded.max_value_len is None
            and (bounded.maxlen is None or len(bounded) + len(attributes) <= bounded.maxlen)
            and _plain(attributes)
        ):
            with self._lock:
                if self._end_time is None:
                    stored = bounded._dict
                    for key, value in attributes.items():
                        # What _set_items stores: a key set again moves to the end.
                        if key in stored:
                            del stored[key]
                        stored[key] = value
                    return
        super().set_attributes(attributes)


class RequestTracer(trace_api.Tracer):
    """Tandem's tracer: an SDK tracer's spans, started as `Tracer.start_span` would start them.

    The pipeline's `tracer` (and `tandem_telemetry.get_tracer()`), used by the
    middleware, the client and application code alike. Spans come from the
    wrapped SDK tracer's configuration, read at every start: sampler, id
    generator, processors, limits, resource, scope and enabled state.
    """

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        tracer = self._tracer
        attributes = attributes or {}
        links = links or ()
        current_context = trace_api.get_current_span(context).get_span_context()
        if not tracer._is_enabled():
            return NonRecordingSpan(current_context)
        parent_span_context: SpanContext | None = None
        if current_context is None or not current_context.is_valid:
            trace_id = tracer.id_generator.generate_trace_id()
            random_trace_id = tracer.id_generator.is_trace_id_random()
        else:
            parent_span_context = current_context
            trace_id = parent_span_context.trace_id
            random_trace_id = parent_span_context.trace_flags.random_trace_id
        sampling = tracer.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        flags = _SAMPLED if sampling.decision.is_sampled() else _NOT_SAMPLED
        if random_trace_id:
            flags = TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID)
        span_context = SpanContext(
            trace_id, tracer.id_generator.generate_span_id(), False, flags, sampling.trace_state
        )
        record_end_metrics = tracer._tracer_metrics.start_span(
            parent_span_context, sampling.decision
        )
        if not sampling.decision.is_recording():
            return NonRecordingSpan(span_context)
        limits = tracer._span_limits
        span_attributes = sampling.attributes if sampling.attributes is not None else attributes
        if (
            limits.max_span_attribute_length is None
            and (
                limits.max_span_attributes is None
                or len(span_attributes) <= limits.max_span_attributes
            )
            and _plain(span_attributes)
        ):
            bounded = BoundedAttributes(limits.max_span_attributes, None, False, None)
            bounded._dict.update(span_attributes)
        else:
            bounded = BoundedAttributes(
                limits.max_span_attributes, span_attributes, False, limits.max_span_attribute_length
            )
        span = RequestSpan.__new__(RequestSpan)
        # Every field Span.__init__ sets; test_spans checks the list against the SDK's.
        span._name = name
        span._context = span_context
        span._kind = kind
        span._instrumentation_info = tracer.instrumentation_info
        span._instrumentation_scope = tracer._instrumentation_scope
        span._parent = parent_span_context
        span._start_time = start_time if start_time is not None else time_ns()
        span._end_time = None
        span._attributes = bounded
        span._events = BoundedList(limits.max_events)
        span._resource = tracer.resource
        span._status = _UNSET
        span._sampler = tracer.sampler
        span._trace_config = None
        span._record_exception = record_exception
        span._set_status_on_exception = set_status_on_exception
        span._span_processor = tracer.span_processor
        span._limits = limits
        span._lock = threading.Lock()
        span._links = span._new_links(links)
        span._record_end_metrics = record_end_metrics
        tracer.span_processor.on_start(span, parent_context=context)
        return span

    # The SDK's own: self.start_span, then use_span (as a context manager or a decorator).
    start_as_current_span = Tracer.start_as_current_span


# --- Duration records -------------------------------------------------------------

_INFINITY = float("inf")
# Beyond this many distinct attribute sets, new ones take the SDK's path.
PREPARED_SETS_LIMIT = 512

_Target = tuple[Any, Any, Any]  # (view-instrument match, aggregation key, aggregation)


class DurationHistogram:
    """Records into an SDK histogram like `Histogram.record`, faster for repeated attribute sets."""

    def __init__(self, histogram: SDKHistogram) -> None:
        self._histogram = histogram
        consumer = histogram._measurement_consumer
        # The meter provider's own consumer; with any other, every record takes the SDK's path.
        self._consumer = consumer if isinstance(consumer, SynchronousMeasurementConsumer) else None
        self._storages = self._consumer._reader_storages if self._consumer is not None else None
        self._prepared: dict[
            tuple[tuple[str, Any], ...], tuple[Mapping[str, Any], list[_Target]]
        ] = {}

    def record(self, amount: float, attributes: dict[str, Any]) -> None:
        histogram = self._histogram
        consumer = self._consumer
        key = tuple(attributes.items())
        prepared = self._prepared.get(key)
        if (
            prepared is None
            or consumer is None
            or not 0.0 <= amount < _INFINITY
            or not histogram._is_enabled()
        ):
            # The SDK's path: it also warns about, and drops, negative and non-finite amounts.
            histogram.record(amount, attributes)
            if prepared is None:
                self._prepare(key, attributes)
            return
        if consumer._reader_storages is not self._storages:
            # A reader was added or removed: prepare the sets again.
            self._prepared.clear()
            self._storages = consumer._reader_storages
            histogram.record(amount, attributes)
            return
        cleaned, targets = prepared
        context = get_current()
        measurement = Measurement(amount, time_ns(), histogram, context)
        # Validated when the set was prepared; the aggregation keeps a reference, as it would
        # to a copy.
        object.__setattr__(measurement, "attributes", cleaned)
        sample = consumer._sdk_config.exemplar_filter.should_sample(
            amount, measurement.time_unix_nano, cleaned, context
        )
        for match, aggregation_key, aggregation in targets:
            if match._attributes_aggregation.get(aggregation_key) is aggregation:
                aggregation.aggregate(measurement, sample)
            else:
                match.consume_measurement(measurement, sample)
                self._prepared.pop(key, None)

    def _prepare(self, key: tuple[tuple[str, Any], ...], attributes: dict[str, Any]) -> None:
        """Remember the aggregations the SDK made for this set, if the shortcut is safe for each."""
        if self._storages is None or len(self._prepared) >= PREPARED_SETS_LIMIT:
            return
        cleaned = Measurement(0, 0, self._histogram, get_current(), attributes).attributes
        if cleaned is None:
            return
        aggregation_key = _hash_attributes(dict(cleaned))
        targets: list[_Target] = []
        for storage in self._storages.values():
            for match in storage._get_or_init_view_instrument_match(self._histogram):
                aggregation = match._attributes_aggregation.get(aggregation_key)
                if (
                    match._reset_on_collect
                    or match._view._attribute_keys is not None
                    or aggregation is None
                ):
                    return
                targets.append((match, aggregation_key, aggregation))
        self._prepared[key] = (cleaned, targets)


# --- OTLP encoding ----------------------------------------------------------------

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

_FIXED64 = Struct("<Q").pack
# Start and end times, each a tag byte and a fixed64.
_TIMES = Struct("<BQBQ").pack
# The SDK's encoder always sends a status, even an unset one.
_EMPTY_STATUS = b"\x7a\x00"
_DOUBLE = Struct("<d").pack
_FIXED32 = Struct("<I").pack
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Span.flags: "has is_remote" always, plus "is remote" for a remote parent or link.
_FLAGS_LOCAL = b"\x85\x01" + _FIXED32(0x100)
_FLAGS_REMOTE = b"\x85\x01" + _FIXED32(0x300)
_LINK_FLAGS_LOCAL = b"\x35" + _FIXED32(0x100)
_LINK_FLAGS_REMOTE = b"\x35" + _FIXED32(0x300)
# Attribute pairs repeat from span to span (method, scheme, route, status...).
# The cache is bounded: high-cardinality values simply stop being cached.
_PAIR_CACHE_LIMIT = 4096
# Nor are long pairs: the cache stays under 4096 × 256 bytes per attribute kind.
_PAIR_CACHE_MAX_BYTES = 256


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


def _text(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: the SDK's encoder would fail the whole batch on
        # it; U+FFFD in its place is the better outcome.
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def _any_value(value: Any) -> bytes | None:
    """An AnyValue message, or None when the value cannot be encoded (the SDK drops those too)."""
    if isinstance(value, str):
        return _field(b"\x0a", _text(value))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
        return None
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    try:
        # Arrays, maps, bytes and None are rare in spans: the SDK's own encoding.
        return _encode_value(value).SerializeToString()
    except Exception:  # noqa: BLE001 - the SDK logs and drops such an attribute
        return None


# Tagged KeyValue fields by attribute tag, then by (key, value): the type is
# checked on a hit, because True == 1 == 1.0 share one dictionary entry.
_pairs: dict[bytes, dict[tuple[str, Any], tuple[type, bytes]]] = {}


def _key_value(tag: bytes, key: str, value: Any) -> bytes | None:
    """One KeyValue field, tag included; None for a value that cannot be encoded."""
    any_value = _any_value(value)
    if any_value is None:
        logger.warning("attribute %r could not be encoded for OTLP and was dropped", key)
        return None
    pair = _field(b"\x0a", _text(key)) + _field(b"\x12", any_value)
    return tag + _varint(len(pair)) + pair


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
    out: list[bytes] = []
    if not attributes:
        return out
    cache = _pairs.get(tag)
    if cache is None:
        cache = _pairs[tag] = {}
    # The SDK's BoundedAttributes keeps a plain dict; iterating it directly
    # is several times cheaper than going through the Mapping protocol.
    items = getattr(attributes, "_dict", attributes).items()
    for key, value in items:
        try:
            hit = cache.get((key, value))
        except TypeError:  # an unhashable value, such as a mapping
            hit = None
        if hit is not None and hit[0] is type(value):
            out.append(hit[1])
            continue
        encoded = _key_value(tag, key, value)
        if encoded is None:
            continue
        out.append(encoded)
        if len(cache) < _PAIR_CACHE_LIMIT and len(encoded) <= _PAIR_CACHE_MAX_BYTES:
            with suppress(TypeError):  # an unhashable value is not cached
                cache[(key, value)] = (type(value), encoded)
    return out


def _trace_state(context: SpanContext) -> bytes:
    state = context.trace_state
    if not state:
        return b""
    return _field(b"\x1a", _text(",".join(f"{key}={value}" for key, value in state.items())))


_KINDS = {
    kind: b"\x30" + bytes((kind.value + 1,)) for kind in SpanKind
}  # OTLP counts from UNSPECIFIED = 0


def _span(span: ReadableSpan) -> bytes:
    """One Span message, without its tag; fields in field-number order, defaults omitted.

    Reads ReadableSpan's fields directly: its properties copy events and
    links into tuples and cost a call each, on every span of every batch.
    """
    context = span._context
    if context is None:  # no ids to send; the SDK's encoder cannot encode such a span either
        raise ValueError(f"span {span._name!r} has no SpanContext")
    parent = span._parent
    name = _text(span._name)
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_trace_state(context))
    if parent is not None:
        parts.append(b"\x22\x08")
        parts.append(parent.span_id.to_bytes(8, "big"))
    parts.append(b"\x2a")
    parts.append(_varint(len(name)))
    parts.append(name)
    parts.append(_KINDS[span._kind])
    parts.append(_TIMES(0x39, span._start_time or 0, 0x41, span._end_time or 0))
    attributes = span._attributes
    parts.extend(_attributes(b"\x4a", attributes))
    if dropped := getattr(attributes, "dropped", 0):
        parts.append(b"\x50" + _varint(dropped))
    events, links = span._events, span._links
    if events:
        for event in events:
            parts.append(_field(b"\x5a", _event(event)))
        if dropped := getattr(events, "dropped", 0):
            parts.append(b"\x60" + _varint(dropped))
    if links:
        for link in links:
            parts.append(_field(b"\x6a", _link(link)))
        if dropped := getattr(links, "dropped", 0):
            parts.append(b"\x70" + _varint(dropped))
    parts.append(_status(span._status))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def _status(status: Any) -> bytes:
    if status is None:
        return b""
    code = status.status_code.value
    if not code and not status.description:
        return _EMPTY_STATUS
    body = b""
    if status.description:
        body += _field(b"\x12", _text(status.description))
    if code:
        body += b"\x18" + bytes((code,))
    return _field(b"\x7a", body)


def _event(event: Any) -> bytes:
    parts = [b"\x09" + _FIXED64(event.timestamp or 0)]
    if event.name:
        parts.append(_field(b"\x12", _text(event.name)))
    parts.extend(_attributes(b"\x1a", event.attributes))
    if dropped := event.dropped_attributes:
        parts.append(b"\x20" + _varint(dropped))
    return b"".join(parts)


def _link(link: Any) -> bytes:
    context = link.context
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    # The SDK's encoder leaves a link's trace state out; so do we, to send the same bytes.
    parts.extend(_attributes(b"\x22", link.attributes))
    if dropped := link.dropped_attributes:
        parts.append(b"\x28" + _varint(dropped))
    parts.append(_LINK_FLAGS_REMOTE if context.is_remote else _LINK_FLAGS_LOCAL)
    return b"".join(parts)


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    parts = []
    if scope.name:
        parts.append(_field(b"\x0a", _text(scope.name)))
    if scope.version:
        parts.append(_field(b"\x12", _text(scope.version)))
    parts.extend(_attributes(b"\x1a", scope.attributes))
    return b"".join(parts)


_resources: dict[int, tuple[Resource, bytes]] = {}


def _resource(resource: Resource) -> bytes:
    # A process has one resource: it is encoded once. Keyed by identity,
    # because hashing a Resource serialises its attributes to JSON.
    cached = _resources.get(id(resource))
    if cached is not None and cached[0] is resource:
        return cached[1]
    encoded = _field(b"\x0a", b"".join(_attributes(b"\x0a", resource.attributes)))
    if len(_resources) < 16:
        _resources[id(resource)] = (resource, encoded)
    return encoded


_Groups = list[tuple[Resource, list[tuple["InstrumentationScope | None", list[bytes]]]]]


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The ExportTraceServiceRequest for these spans, as protobuf wire bytes.

    Grouped by resource, then by instrumentation scope, in first-seen order,
    as the SDK's encoder groups them.
    """
    groups: _Groups = []
    # Equality is checked once per distinct (resource, scope) object pair;
    # a Resource's hash would serialise its attributes to JSON for every span.
    buckets: dict[tuple[int, int], list[bytes]] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope or None
        bucket = buckets.get((id(resource), id(scope)))
        if bucket is None:
            bucket = buckets[(id(resource), id(scope))] = _bucket(groups, resource, scope)
        encoded = _span(span)
        bucket.append(b"\x12" + _varint(len(encoded)) + encoded)
    request = []
    for resource, scopes in groups:
        resource_spans = [_resource(resource)]
        for scope, encoded_spans in scopes:
            scope_spans = _field(b"\x0a", _scope(scope)) + b"".join(encoded_spans)
            if scope is not None and scope.schema_url:
                scope_spans += _field(b"\x1a", _text(scope.schema_url))
            resource_spans.append(_field(b"\x12", scope_spans))
        if resource.schema_url:
            resource_spans.append(_field(b"\x1a", _text(resource.schema_url)))
        request.append(_field(b"\x0a", b"".join(resource_spans)))
    return b"".join(request)


def _bucket(groups: _Groups, resource: Resource, scope: InstrumentationScope | None) -> list[bytes]:
    """The span list for this resource and scope; equal ones held by distinct objects share it."""
    scopes = next(
        (entry[1] for entry in groups if entry[0] is resource or entry[0] == resource), None
    )
    if scopes is None:
        scopes = []
        groups.append((resource, scopes))
    bucket = next((entry[1] for entry in scopes if entry[0] is scope or entry[0] == scope), None)
    if bucket is None:
        bucket = []
        scopes.append((scope, bucket))
    return bucket


class _EncodedTraceStub:
    """The TraceService stub, for a request that is already wire bytes."""

    def __init__(self, channel: Any) -> None:
        self.Export = channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=bytes,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


class FastOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter, sending requests encoded by `encode_spans`."""

    def _initialize_channel_and_stub(self) -> None:
        super()._initialize_channel_and_stub()
        stub = _EncodedTraceStub(self._channel)
        self._client = stub  # type: ignore[assignment]  # the SDK types _client as None

    def _translate_data(  # type: ignore[override]  # wire bytes: _EncodedTraceStub sends them
        self, data: Sequence[ReadableSpan]
    ) -> bytes:
        return encode_spans(data)
