"""Delivery accounting: an outage is one warning and one recovery line, with exact loss counts.

Spans and metrics are told apart: each signal has its own outage and its own lines.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import (
    MetricsServiceServicer,
    add_MetricsServiceServicer_to_server,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
    add_TraceServiceServicer_to_server,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tandem_telemetry import Telemetry
from tandem_telemetry.bootstrap import build_telemetry
from tandem_telemetry.delivery import (
    AccountedBatchSpanProcessor,
    AccountedSpanExporter,
    DeliveryReport,
)
from tests.telemetry.conftest import OTLPReceiver


class Switchable(SpanExporter):
    def __init__(self) -> None:
        self.up = True
        self.received = 0
        self.gate = threading.Event()
        self.gate.set()

    def export(self, spans):
        self.gate.wait()
        if not self.up:
            logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").warning(
                "UNAVAILABLE: connection refused"
            )
            return SpanExportResult.FAILURE
        self.received += len(spans)
        return SpanExportResult.SUCCESS


def test_an_outage_is_reported_once_with_its_losses(caplog: pytest.LogCaptureFixture) -> None:
    report = DeliveryReport()
    inner = Switchable()
    exporter = AccountedSpanExporter(inner, report)
    caplog.set_level(logging.INFO)
    try:
        inner.up = False
        for _ in range(5):
            exporter.export([object()] * 3)  # type: ignore[list-item]  # only the count matters
        inner.up = True
        exporter.export([object()] * 2)  # type: ignore[list-item]  # only the count matters
    finally:
        report.close()
    ours = [r for r in caplog.records if r.name == "tandem_telemetry.delivery"]
    theirs = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert [r.getMessage().split(" (")[0].split(";")[0] for r in ours] == [
        "span export is failing",
        "span export recovered after 0.0s",
    ]
    assert "UNAVAILABLE: connection refused" in ours[0].getMessage()
    assert ours[1].spans_lost == 15
    assert theirs == [], "the exporter's own per-batch lines are held back"
    assert (report.exported, report.failed, report.lost) == (2, 15, 15)


def test_queue_drops_are_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """40 spans into a queue of 8 whose exporter hangs, as on a stalled collector.

    Every span is either exported or counted as dropped, and the SDK never logs a full queue
    (it never overflows).
    """
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    report = DeliveryReport()
    inner = Switchable()
    inner.gate.clear()
    provider = TracerProvider()
    provider.add_span_processor(
        AccountedBatchSpanProcessor(AccountedSpanExporter(inner, report), report, max_queue_size=8)
    )
    tracer = provider.get_tracer("test")
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(40):
                tracer.start_span("s").end()
            dropped = report.queue_dropped
            inner.gate.set()
            provider.shutdown()
    finally:
        report.close()
    # At most one batch was taken by the stalled export; the queue holds 8; the rest were dropped
    # and counted.
    assert 40 - 8 - 4 <= dropped <= 40 - 8
    assert inner.received + dropped == 40
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]


def test_losses_are_published_as_a_metric() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    report = DeliveryReport()
    reader = InMemoryMetricReader()
    report.count_losses_on(MeterProvider(metric_readers=[reader]).get_meter("test"))
    try:
        exporter = AccountedSpanExporter(Switchable(), report)
        exporter.exporter.up = False  # type: ignore[attr-defined]  # the test's Switchable
        exporter.export([object()] * 4)  # type: ignore[list-item]  # only the count matters
        report.admit(0)  # a full queue of size 0: one span dropped
    finally:
        report.close()
    (metric,) = [
        m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    ]
    assert metric.name == "tandem.telemetry.spans.lost"
    assert {p.attributes["reason"]: p.value for p in metric.data.data_points} == {
        "export_failed": 4,
        "queue_full": 1,
    }


# --- Against a real OTLP/gRPC endpoint: the SDK's exporters, as bootstrap wires them ----------

DELIVERY = "tandem_telemetry.delivery"

SPAN_FAILING = (
    "span export is failing ({reason}); spans are dropped until the collector answers, "
    "and a line will say how many"
)
SPAN_RECOVERED = (
    "span export recovered after {seconds}; {lost} spans were lost "
    "({lost} in failed exports, 0 dropped from the full queue)"
)
METRICS_REFUSED = (
    "metric export refused ({reason}): this endpoint does not accept OTLP metrics, as when a "
    "trace store such as Tempo or Jaeger is reached directly; point OTEL_EXPORTER_OTLP_ENDPOINT "
    "at an OpenTelemetry Collector, or set OTEL_METRICS_EXPORTER=none. Spans are not affected; "
    "metrics are dropped, with no further line until this changes"
)
METRICS_FAILED = (
    "metric export failed ({reason}); metrics are dropped until the collector answers, "
    "and a line will say when it does"
)
METRICS_RESUMED = "metric export resumed after {seconds}"


def delivery_lines(caplog: pytest.LogCaptureFixture, endpoint: str) -> list[str]:
    """The delivery lines logged, exact but for the exporter's reason and the outage's length.

    A reason is the SDK exporter's own line for the failed export: `{reason:CODE}` keeps its
    gRPC status code (its wording differs between SDK releases).
    """

    def shape(message: str) -> str:
        message = re.sub(
            rf"\(Failed to export (?:metrics|traces) to {re.escape(endpoint)}, "
            r"error code: StatusCode\.([A-Z_]+)[^)]*\)",
            r"({reason:\1})",
            message,
        )
        return re.sub(r"after \d+\.\ds", "after {seconds}", message)

    return [shape(r.getMessage()) for r in caplog.records if r.name == DELIVERY]


def spans_in(requests: list[ExportTraceServiceRequest]) -> int:
    return sum(len(ss.spans) for r in requests for rs in r.resource_spans for ss in rs.scope_spans)


@contextmanager
def pipeline_to(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    """bootstrap's pipeline (OTLP/gRPC spans and metrics), exporting only when flushed."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{endpoint}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
    telemetry = build_telemetry("delivery-test")
    try:
        yield telemetry
    finally:
        assert telemetry.shutdown()


def export_cycle(telemetry: Telemetry, spans: int) -> None:
    """End `spans` spans, then flush: one span export, then one metric export, both done."""
    for _ in range(spans):
        telemetry.tracer.start_span("s").end()
    assert telemetry.force_flush(timeout=30)


def test_an_endpoint_that_takes_no_metrics_is_said_once_and_blames_no_span(
    otlp_receiver: OTLPReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A trace store reached directly (Tempo, Jaeger) takes OTLP traces and answers metric
    exports with UNIMPLEMENTED, as this receiver does: it serves the trace service only.

    Six cycles of span and metric exports, and the shutdown's: one line, about metrics.
    """
    caplog.set_level(logging.INFO)
    with pipeline_to(otlp_receiver.endpoint, monkeypatch) as telemetry:
        for _ in range(6):
            export_cycle(telemetry, spans=3)
    assert delivery_lines(caplog, otlp_receiver.endpoint) == [
        METRICS_REFUSED.format(reason="{reason:UNIMPLEMENTED}")
    ]
    assert [r for r in caplog.records if r.name.startswith("opentelemetry")] == [], (
        "the exporters' own lines are held back"
    )
    assert spans_in(otlp_receiver.received) == 18
    assert telemetry.delivery is not None
    assert (telemetry.delivery.exported, telemetry.delivery.lost) == (18, 0)


class RefusingTraces(OTLPReceiver):
    """The trace receiver, answering each export with `refuse` while it is set."""

    refuse: grpc.StatusCode | None = None

    def Export(
        self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse:
        if self.refuse is not None:
            context.abort(self.refuse, "refused by the test")
        return super().Export(request, context)


class RefusingMetrics(MetricsServiceServicer):
    """A metrics receiver, answering each export with `refuse` while it is set."""

    refuse: grpc.StatusCode | None = None

    def Export(
        self, request: ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> ExportMetricsServiceResponse:
        if self.refuse is not None:
            context.abort(self.refuse, "refused by the test")
        return ExportMetricsServiceResponse()


@dataclass
class Collector:
    traces: RefusingTraces
    metrics: RefusingMetrics
    endpoint: str


@pytest.fixture
def collector() -> Iterator[Collector]:
    """An OTLP/gRPC endpoint for traces and metrics, each made to refuse exports at will."""
    traces, metrics = RefusingTraces(), RefusingMetrics()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    add_TraceServiceServicer_to_server(traces, server)
    add_MetricsServiceServicer_to_server(metrics, server)
    traces.endpoint = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        yield Collector(traces, metrics, traces.endpoint)
    finally:
        server.stop(grace=None).wait()


def test_metric_lines_change_only_when_the_metric_outage_does(
    collector: Collector, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """UNIMPLEMENTED, then another failure, then UNIMPLEMENTED again, then success: a line at
    each change, none for a repeat, none about spans (delivered all along)."""
    caplog.set_level(logging.INFO)
    with pipeline_to(collector.endpoint, monkeypatch) as telemetry:
        for refuse, cycles in [
            (grpc.StatusCode.UNIMPLEMENTED, 3),
            (grpc.StatusCode.PERMISSION_DENIED, 2),
            (grpc.StatusCode.UNIMPLEMENTED, 2),
            (None, 2),
        ]:
            collector.metrics.refuse = refuse
            for _ in range(cycles):
                export_cycle(telemetry, spans=2)
    assert delivery_lines(caplog, collector.endpoint) == [
        METRICS_REFUSED.format(reason="{reason:UNIMPLEMENTED}"),
        METRICS_FAILED.format(reason="{reason:PERMISSION_DENIED}"),
        METRICS_REFUSED.format(reason="{reason:UNIMPLEMENTED}"),
        METRICS_RESUMED,
    ]
    assert spans_in(collector.traces.received) == 18
    assert telemetry.delivery is not None
    assert telemetry.delivery.lost == 0


def test_a_span_outage_is_two_span_lines_whatever_metrics_do(
    collector: Collector, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The collector refuses spans for three cycles (INTERNAL: not retried, so no backoff to
    wait out) while it takes metrics: one line when span exports start failing, one when they
    recover, with the six spans lost; a metric export's success recovers no span outage."""
    caplog.set_level(logging.INFO)
    with pipeline_to(collector.endpoint, monkeypatch) as telemetry:
        export_cycle(telemetry, spans=2)
        collector.traces.refuse = grpc.StatusCode.INTERNAL
        for _ in range(3):
            export_cycle(telemetry, spans=2)
        collector.traces.refuse = None
        export_cycle(telemetry, spans=1)
    assert delivery_lines(caplog, collector.endpoint) == [
        SPAN_FAILING.format(reason="{reason:INTERNAL}"),
        SPAN_RECOVERED.format(seconds="{seconds}", lost=6),
    ]
    (recovered,) = [r for r in caplog.records if r.name == DELIVERY and "recovered" in r.msg]
    assert recovered.spans_lost == 6
    assert spans_in(collector.traces.received) == 3
    assert telemetry.delivery is not None
    assert (telemetry.delivery.exported, telemetry.delivery.failed) == (3, 6)
