"""Delivery accounting: an outage is one warning and one recovery line, with exact loss counts."""

from __future__ import annotations

import logging
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tandem_telemetry.delivery import (
    AccountedBatchSpanProcessor,
    AccountedSpanExporter,
    DeliveryReport,
)


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
        "telemetry export is failing",
        "telemetry export recovered after 0.0s",
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
