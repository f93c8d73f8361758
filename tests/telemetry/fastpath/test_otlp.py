"""tandem_telemetry.otlp: the direct encoder must send what the SDK's encoder sends."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from tandem_telemetry.fastpath import FastOTLPSpanExporter, encode_spans
from tests.support import refused_port
from tests.telemetry.conftest import OTLPReceiver

# Differential tests of the fast path: they hold it to the SDK, on the releases it lists.
pytestmark = pytest.mark.fast_path

REMOTE = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    True,
    TraceFlags(1),
    TraceState([("vendor", "x1"), ("other", "y")]),
)


def finished(provider: TracerProvider, memory: InMemorySpanExporter) -> tuple[ReadableSpan, ...]:
    provider.force_flush()
    return memory.get_finished_spans()


def recording_provider(
    resource: Resource | None = None, limits: SpanLimits | None = None
) -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=resource or Resource.create({"service.name": "otlp-test", "process.pid": 7}),
        span_limits=limits,
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def assert_same_request(spans: tuple[ReadableSpan, ...]) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert ours == sdk_encode_spans(spans)


def test_a_server_span_is_byte_for_byte_the_sdk_encoding() -> None:
    provider, memory = recording_provider()
    tracer = provider.get_tracer("tandem_telemetry", "1.0")
    span = tracer.start_span(
        "GET",
        set_span_in_context(NonRecordingSpan(REMOTE)),
        SpanKind.SERVER,
        {"http.request.method": "GET", "url.path": "/api/work", "server.port": 8080},
    )
    span.set_attributes({"http.response.status_code": 200, "http.route": "/api/work"})
    span.update_name("GET /api/work")
    span.end()
    spans = finished(provider, memory)
    assert encode_spans(spans) == sdk_encode_spans(spans).SerializeToString()


def test_every_span_feature_matches_the_sdk_encoding() -> None:
    provider, memory = recording_provider(
        limits=SpanLimits(max_span_attributes=3, max_events=1, max_links=1, max_event_attributes=1)
    )
    tracer = provider.get_tracer(
        "scope.a",
        "2.0",
        schema_url="https://opentelemetry.io/schemas/1.26.0",
        attributes={"scope.attr": True},
    )
    other = provider.get_tracer("scope.b")
    remote_parent = set_span_in_context(NonRecordingSpan(REMOTE))
    local_link = SpanContext(1, 2, False)
    for kind in SpanKind:
        span = tracer.start_span(
            f"{kind.name} span",
            remote_parent,
            kind,
            links=[Link(REMOTE, {"link.attr": "x"}), Link(local_link)],
        )
        span.set_attributes({"a": 1, "b": "two", "c": 3.5, "dropped": -4})
        span.add_event("first", {"e.int": -(2**63), "e.more": "dropped"})
        span.add_event("second")
        span.set_status(
            Status(StatusCode.ERROR, "it broke")
            if kind is SpanKind.CLIENT
            else Status(StatusCode.OK)
        )
        span.end()
        child = other.start_span("child", set_span_in_context(span))
        child.set_attributes(
            {
                "list": ("a", "b"),
                "ints": (1, 2),
                "flag": False,
                "raw": b"\x00\xff",
                "unicode": "héllo ✓",
            }
        )
        child.end()
    spans = finished(provider, memory)
    assert {span.dropped_attributes for span in spans} >= {1}
    assert {span.dropped_links for span in spans} >= {1}
    assert_same_request(spans)


def test_spans_from_several_resources_are_grouped_like_the_sdk_groups_them() -> None:
    first, first_memory = recording_provider(
        Resource.create({"service.name": "gateway"}, "https://example.com/schema")
    )
    second, second_memory = recording_provider(Resource.create({"service.name": "worker"}))
    # An equal resource held by a distinct object shares the first one's entry.
    third, third_memory = recording_provider(
        Resource.create({"service.name": "gateway"}, "https://example.com/schema")
    )
    for provider in (first, second, third, first):
        provider.get_tracer("t").start_span("s").end()
    spans = (
        finished(first, first_memory)
        + finished(second, second_memory)
        + finished(third, third_memory)
    )
    spans = (spans[0], spans[2], spans[3], spans[1])
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert len(ours.resource_spans) == 2
    assert [len(rs.scope_spans[0].spans) for rs in ours.resource_spans] == [3, 1]
    assert_same_request(spans)


attribute_values = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=("Cs",))),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=8),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3).map(tuple),
    st.lists(st.text(max_size=5), max_size=3).map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.text(min_size=1, max_size=12), attribute_values, max_size=6),
    st.text(max_size=20),
)
def test_any_attributes_match_the_sdk_encoding(attributes: dict[str, object], name: str) -> None:
    provider, memory = recording_provider()
    span = provider.get_tracer("t").start_span(name, Context(), SpanKind.CLIENT, attributes)
    span.end()
    assert_same_request(finished(provider, memory))


def test_the_attribute_cache_tells_true_one_and_one_point_zero_apart() -> None:
    provider, memory = recording_provider()
    tracer = provider.get_tracer("t")
    for value in (True, 1, 1.0, 1, True):
        tracer.start_span("s", attributes={"same.key": value}).end()
    spans = finished(provider, memory)
    decoded = (
        ExportTraceServiceRequest.FromString(encode_spans(spans))
        .resource_spans[0]
        .scope_spans[0]
        .spans
    )
    kinds = [span.attributes[0].value.WhichOneof("value") for span in decoded]
    assert kinds == ["bool_value", "int_value", "double_value", "int_value", "bool_value"]
    assert_same_request(spans)


def test_a_lone_surrogate_is_replaced_and_the_batch_still_encodes() -> None:
    provider, memory = recording_provider()
    provider.get_tracer("t").start_span("bad \ud800 name", attributes={"text": "x\udfffy"}).end()
    decoded = ExportTraceServiceRequest.FromString(encode_spans(finished(provider, memory)))
    span = decoded.resource_spans[0].scope_spans[0].spans[0]
    assert span.name == "bad \ufffd name"
    assert span.attributes[0].value.string_value == "x\ufffdy"


def test_an_int_beyond_int64_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    provider, memory = recording_provider()
    provider.get_tracer("t").start_span("s", attributes={"huge": 2**64, "kept": 1}).end()
    with caplog.at_level(logging.WARNING, logger="tandem_telemetry.otlp"):
        decoded = ExportTraceServiceRequest.FromString(encode_spans(finished(provider, memory)))
    assert [kv.key for kv in decoded.resource_spans[0].scope_spans[0].spans[0].attributes] == [
        "kept"
    ]
    assert "huge" in caplog.text


def test_the_exporter_delivers_the_sdk_request_and_fails_cleanly_without_a_receiver(
    otlp_receiver: OTLPReceiver,
) -> None:
    provider, memory = recording_provider(Resource.create({"service.name": "fast-exporter"}))
    span = provider.get_tracer("t").start_span(
        "GET /x", Context(), SpanKind.SERVER, {"http.route": "/x"}
    )
    span.end()
    spans = finished(provider, memory)
    exporter = FastOTLPSpanExporter(endpoint=otlp_receiver.endpoint, insecure=True, timeout=5)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    # What arrived over gRPC is what the SDK's own exporter would have sent.
    assert otlp_receiver.received == [sdk_encode_spans(spans)]

    with refused_port() as port:
        unreachable = FastOTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=1)
        assert unreachable.export(spans) is SpanExportResult.FAILURE
        unreachable.shutdown()


def test_a_readable_span_built_directly_matches_the_sdk_encoding() -> None:
    """Spans from other code paths: a plain dict of attributes, tuples of events and links, no
    limits."""
    from opentelemetry.sdk.trace import Event

    span = ReadableSpan(
        name="direct",
        context=SpanContext(5 << 64, 6, False, TraceFlags(1)),
        parent=REMOTE,
        resource=Resource.create({"service.name": "direct"}),
        attributes={"plain": "dict", "n": 3},
        events=(Event("e", {"k": "v"}, timestamp=10),),
        links=(Link(REMOTE, {"l": True}),),
        kind=SpanKind.CONSUMER,
        status=Status(StatusCode.ERROR, "why"),
        start_time=1,
        end_time=2,
    )
    bare = ReadableSpan(name="bare", context=SpanContext(7 << 64, 8, False))
    assert_same_request((span, bare))
