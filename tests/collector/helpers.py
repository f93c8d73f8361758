"""Builders for hand-made OTLP data used across the collector tests."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

BASE_NS = 1_700_000_000 * 1_000_000_000  # 2023-11-14T22:13:20Z
MS = 1_000_000

SERVER, CLIENT, INTERNAL = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_INTERNAL


def trace_id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def span_id(n: int) -> bytes:
    return n.to_bytes(8, "big")


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        any_value = AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = AnyValue(int_value=value)
    elif isinstance(value, float):
        any_value = AnyValue(double_value=value)
    else:
        any_value = AnyValue(string_value=str(value))
    return KeyValue(key=key, value=any_value)


def make_span(
    tid: bytes,
    sid: bytes,
    name: str,
    *,
    parent: bytes = b"",
    start_ms: float = 0,
    duration_ms: float = 1,
    kind: int = SERVER,
    attrs: dict[str, Any] | None = None,
    error: bool = False,
    flags: int = 0,
) -> Span:
    start = BASE_NS + round(start_ms * MS)
    span = Span(
        trace_id=tid,
        span_id=sid,
        parent_span_id=parent,
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=start + round(duration_ms * MS),
        attributes=[kv(k, v) for k, v in (attrs or {}).items()],
        flags=flags,
    )
    if error:
        span.status.code = Status.STATUS_CODE_ERROR
    return span


def resource_spans(service: str, spans: list[Span], **resource_attrs: Any) -> ResourceSpans:
    rs = ResourceSpans()
    rs.resource.attributes.append(kv("service.name", service))
    for key, value in resource_attrs.items():
        rs.resource.attributes.append(kv(key.replace("_", "."), value))
    scope = rs.scope_spans.add()
    scope.scope.name = "tandem.tests"
    scope.spans.extend(spans)
    return rs


def request(*batches: ResourceSpans) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=list(batches))


def export(grpc_endpoint: str, *batches: ResourceSpans) -> ExportTraceServiceResponse:
    """Send hand-made spans to a collector over OTLP/gRPC, as an SDK exporter would."""
    with grpc.insecure_channel(grpc_endpoint) as channel:
        return TraceServiceStub(channel).Export(request(*batches), timeout=10)
