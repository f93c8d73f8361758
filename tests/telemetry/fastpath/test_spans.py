"""tandem_telemetry.fastpath: RequestTracer starts the span the SDK's Tracer.start_span would."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import (
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    TracerProvider,
    _TracerConfig,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
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

from tandem_telemetry.fastpath import RequestSpan, RequestTracer

# Differential tests of the fast path: they hold it to the SDK, on the releases it lists.
pytestmark = pytest.mark.fast_path

SERVER_ATTRIBUTES = {
    "http.request.method": "GET",
    "url.path": "/api/work",
    "url.scheme": "http",
    "server.port": 8080,
}
REMOTE = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    True,
    TraceFlags(1),
    TraceState([("v", "1")]),
)


class CountingIds(IdGenerator):
    """The same id sequence for each of two providers, so their spans can be compared whole."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def generate_span_id(self) -> int:
        return next(self._next)

    def generate_trace_id(self) -> int:
        return next(self._next) << 64


class Starts(SpanProcessor):
    def __init__(self) -> None:
        self.started: list[tuple[Any, Context | None]] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.started.append((span, parent_context))


def pipeline(**provider_args: Any) -> tuple[TracerProvider, InMemorySpanExporter, Starts]:
    memory, starts = InMemorySpanExporter(), Starts()
    provider = TracerProvider(id_generator=CountingIds(), **provider_args)
    provider.add_span_processor(starts)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory, starts


def both(
    run: Any, **provider_args: Any
) -> tuple[tuple[ReadableSpan, ...], tuple[ReadableSpan, ...]]:
    """The spans each exported when the same calls run through Tracer.start_span and through
    RequestTracer.start_span."""
    sdk_provider, sdk_memory, _ = pipeline(**provider_args)
    ours_provider, ours_memory, _ = pipeline(**provider_args)
    sdk_tracer = sdk_provider.get_tracer("tandem_telemetry")
    run(sdk_tracer.start_span)
    run(RequestTracer(ours_provider.get_tracer("tandem_telemetry")).start_span)
    return sdk_memory.get_finished_spans(), ours_memory.get_finished_spans()


def assert_same(sdk: tuple[ReadableSpan, ...], ours: tuple[ReadableSpan, ...]) -> None:
    assert len(ours) == len(sdk) > 0
    assert encode_spans(ours) == encode_spans(sdk)
    for a, b in zip(sdk, ours, strict=True):
        assert dict(a.attributes) == dict(b.attributes) and list(a.attributes) == list(b.attributes)
        assert (a.dropped_attributes, a.dropped_links, a.dropped_events) == (
            b.dropped_attributes,
            b.dropped_links,
            b.dropped_events,
        )


def test_a_request_span_has_every_field_an_sdk_span_has() -> None:
    provider, _, _ = pipeline()
    tracer = provider.get_tracer("t")
    sdk_span = tracer.start_span("GET", Context(), SpanKind.SERVER, dict(SERVER_ATTRIBUTES))
    ours = RequestTracer(tracer).start_span(
        "GET", Context(), SpanKind.SERVER, dict(SERVER_ATTRIBUTES)
    )
    assert isinstance(ours, RequestSpan)
    # If the SDK's Span grows a field, RequestTracer must learn to set it: this fails first.
    assert set(vars(ours)) == set(vars(sdk_span))
    assert ours._status.status_code == sdk_span._status.status_code
    for name in (
        "_name",
        "_kind",
        "_parent",
        "_resource",
        "_instrumentation_scope",
        "_limits",
        "_sampler",
        "_span_processor",
    ):
        assert getattr(ours, name) == getattr(sdk_span, name), name


def test_server_and_client_spans_export_exactly_as_the_sdk_exports_them() -> None:
    def run(start: Any) -> None:
        remote = set_span_in_context(NonRecordingSpan(REMOTE))
        server = start(
            "GET",
            remote,
            SpanKind.SERVER,
            dict(SERVER_ATTRIBUTES),
            [Link(REMOTE, {"why": "edge"})],
            1_000,
        )
        client = start(
            "POST",
            set_span_in_context(server),
            SpanKind.CLIENT,
            {"http.request.method": "POST", "url.full": "http://w/tasks"},
            None,
            2_000,
        )
        client.set_attributes(
            {"http.response.status_code": 503, "error.type": "503", "http.request.method": "POST"}
        )
        client.set_status(Status(StatusCode.ERROR))
        client.end(3_000)
        server.set_attributes(
            {"http.response.status_code": 200, "http.route": "/api/work", "ratio": 0.5, "ok": True}
        )
        server.set_attribute("app.custom", ("a", "b"))
        server.add_event("checkpoint", {"n": 1}, 3_500)
        server.update_name("GET /api/work")
        server.end(4_000)

    assert_same(*both(run))


@pytest.mark.parametrize(
    "attributes",
    [
        {"tuple": ("a", "b"), "bytes": b"x"},  # not plain scalars: the SDK's validation
        {"": "empty key", "kept": 1},  # an invalid key is dropped, as the SDK drops it
        {"none": None, "kept": "yes"},
    ],
)
def test_attributes_the_fast_path_does_not_take_are_validated_by_the_sdk(
    attributes: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    def run(start: Any) -> None:
        span = start("s", Context(), SpanKind.INTERNAL, dict(attributes), None, 1)
        span.set_attributes(dict(attributes))
        span.end(2)

    with caplog.at_level(logging.ERROR):
        assert_same(*both(run))


def test_span_limits_apply_as_in_the_sdk() -> None:
    def run(start: Any) -> None:
        span = start("s", Context(), SpanKind.SERVER, {"a": "long value", "b": 2, "c": 3}, None, 1)
        span.set_attributes({"d": "another long value", "e": 5})
        span.end(2)

    for limits in (
        SpanLimits(max_span_attributes=2),
        SpanLimits(max_span_attribute_length=4),
        SpanLimits(max_span_attributes=0),
    ):
        sdk, ours = both(run, span_limits=limits)
        assert_same(sdk, ours)
        assert ours[0].dropped_attributes or limits.max_span_attribute_length


def test_the_configured_sampler_decides() -> None:
    provider, memory, starts = pipeline(sampler=ParentBased(TraceIdRatioBased(0.0)))
    spans = RequestTracer(provider.get_tracer("t"))
    dropped = spans.start_span("root", Context(), SpanKind.SERVER, {"a": 1})
    assert not dropped.is_recording() and not dropped.get_span_context().trace_flags.sampled
    kept = spans.start_span(
        "child", set_span_in_context(NonRecordingSpan(REMOTE)), SpanKind.SERVER, {"a": 1}
    )
    assert kept.is_recording() and kept.get_span_context().trace_id == REMOTE.trace_id
    assert kept.get_span_context().trace_state == REMOTE.trace_state
    dropped.end()
    kept.end()
    assert [span.name for span in memory.get_finished_spans()] == ["child"]
    assert [span for span, _ in starts.started] == [kept]

    off, off_memory, _ = pipeline(sampler=ALWAYS_OFF)
    RequestTracer(off.get_tracer("t")).start_span("s", Context(), SpanKind.SERVER, {}).end()
    assert off_memory.get_finished_spans() == ()


def test_processors_see_the_span_and_its_parent_context_at_start() -> None:
    provider, _, starts = pipeline()
    parent = set_span_in_context(NonRecordingSpan(REMOTE))
    span = RequestTracer(provider.get_tracer("t")).start_span(
        "GET", parent, SpanKind.SERVER, {"a": 1}
    )
    assert starts.started == [(span, parent)]
    assert span.parent == REMOTE


def test_a_disabled_tracer_gives_a_non_recording_span() -> None:
    provider, memory, _ = pipeline()
    tracer = provider.get_tracer("t")
    tracer._set_tracer_config(_TracerConfig(is_enabled=False))
    span = RequestTracer(tracer).start_span(
        "s", set_span_in_context(NonRecordingSpan(REMOTE)), SpanKind.SERVER, {"a": 1}
    )
    assert isinstance(span, NonRecordingSpan) and span.get_span_context() == REMOTE
    span.end()
    assert memory.get_finished_spans() == ()


def test_an_ended_request_span_keeps_its_attributes(caplog: pytest.LogCaptureFixture) -> None:
    provider, memory, _ = pipeline()
    span = RequestTracer(provider.get_tracer("t")).start_span(
        "s", Context(), SpanKind.SERVER, {"a": 1}
    )
    span.end()
    with caplog.at_level(logging.WARNING):
        span.set_attributes({"late": 1})
        span.set_attribute("later", 2)
        span.update_name("renamed")
        span.set_status(Status(StatusCode.ERROR))
        span.add_event("late event")
    assert "ended span" in caplog.text
    # The processors were handed an immutable snapshot taken at the end, as by every SDK span.
    [exported] = memory.get_finished_spans()
    assert type(exported) is ReadableSpan and exported is not span
    assert dict(exported.attributes) == {"a": 1}
    assert (
        exported.name == "s"
        and exported.status.status_code is StatusCode.UNSET
        and exported.events == ()
    )


def test_start_as_current_span_behaves_as_the_sdks() -> None:
    """Application code: the current span, exception recording, and the flags that turn it off."""

    def run(tracer: Any) -> None:
        with tracer.start_as_current_span(
            "outer", attributes={"tandem.task": 1}, start_time=1
        ) as outer:
            assert trace_api.get_current_span() is outer
            with (
                pytest.raises(ValueError),
                tracer.start_as_current_span("fails", start_time=2, end_on_exit=True),
            ):
                raise ValueError("bad input")
            with (
                pytest.raises(KeyError),
                tracer.start_as_current_span(
                    "quiet", start_time=3, record_exception=False, set_status_on_exception=False
                ),
            ):
                raise KeyError("k")
        assert trace_api.get_current_span() is not outer

    sdk_provider, sdk_memory, _ = pipeline()
    ours_provider, ours_memory, _ = pipeline()
    run(sdk_provider.get_tracer("tandem_telemetry"))
    run(RequestTracer(ours_provider.get_tracer("tandem_telemetry")))
    sdk, ours = sdk_memory.get_finished_spans(), ours_memory.get_finished_spans()
    # Exception events carry their own timestamps and stack traces; compare everything else.
    assert [(s.name, s.status.status_code, [e.name for e in s.events]) for s in ours] == [
        (s.name, s.status.status_code, [e.name for e in s.events]) for s in sdk
    ]
    assert [(s.name, s.status.status_code) for s in ours] == [
        ("fails", StatusCode.ERROR),
        ("quiet", StatusCode.UNSET),
        ("outer", StatusCode.UNSET),
    ]
    assert [s.parent.span_id for s in ours[:2]] == [ours[2].context.span_id] * 2
