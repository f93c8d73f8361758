"""OTLP/gRPC span export: the SDK's exporter, with an encoder that writes the wire format directly.

The SDK's encoder builds a protobuf object for every span, attribute and
value, in Python, on the batch processor's thread; under load that costs
about 40 µs per span on the same GIL as the requests. This module writes
the same ExportTraceServiceRequest bytes straight from the spans, caching
what repeats from span to span (the resource and scope, and attribute
pairs such as ``http.request.method=GET``). Everything else (channel, TLS,
headers, compression, retries, timeouts, the OTEL_EXPORTER_OTLP_* variables)
stays the SDK's OTLPSpanExporter. tests/telemetry/test_otlp.py holds the
output to the SDK encoder's, span for span.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from struct import Struct
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import _encode_value
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

logger = logging.getLogger(__name__)

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
            try:
                cache[(key, value)] = (type(value), encoded)
            except TypeError:
                pass
    return out


def _trace_state(context: SpanContext) -> bytes:
    state = context.trace_state
    if not state:
        return b""
    return _field(b"\x1a", _text(",".join(f"{key}={value}" for key, value in state.items())))


_KINDS = {kind: b"\x30" + bytes((kind.value + 1,)) for kind in SpanKind}  # OTLP counts from UNSPECIFIED = 0


def _span(span: ReadableSpan) -> bytes:
    """One Span message, without its tag; fields in field-number order, defaults omitted.

    Reads ReadableSpan's fields directly: its properties copy events and
    links into tuples and cost a call each, on every span of every batch.
    """
    context = span._context  # noqa: SLF001
    parent = span._parent  # noqa: SLF001
    name = _text(span._name)  # noqa: SLF001
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
    parts.append(_KINDS[span._kind])  # noqa: SLF001
    parts.append(_TIMES(0x39, span._start_time or 0, 0x41, span._end_time or 0))  # noqa: SLF001
    attributes = span._attributes  # noqa: SLF001
    parts.extend(_attributes(b"\x4a", attributes))
    if dropped := getattr(attributes, "dropped", 0):
        parts.append(b"\x50" + _varint(dropped))
    events, links = span._events, span._links  # noqa: SLF001
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
    parts.append(_status(span._status))  # noqa: SLF001
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
    parts = [b"\x0a\x10" + context.trace_id.to_bytes(16, "big"), b"\x12\x08" + context.span_id.to_bytes(8, "big")]
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
    scopes = next((entry[1] for entry in groups if entry[0] is resource or entry[0] == resource), None)
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
        self._client = _EncodedTraceStub(self._channel)

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        return encode_spans(data)
