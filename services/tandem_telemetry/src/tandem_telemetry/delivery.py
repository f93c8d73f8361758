"""Telemetry delivery accounting: what a collector outage cost, said once, never per batch.

The OTLP exporters log every retry and every failed batch, and the SDK's
batch processor logs a full queue; during an outage that is a stream of
lines for as long as it lasts. Here the exporters are wrapped: their own
lines are held back, and spans that would overflow the processor's queue
are counted before they reach it. The pipeline says two things instead: one
warning when exports start failing (with the exporter's reason), one line
when they recover, naming how many spans were lost in between and why. The
losses are also published as `tandem.telemetry.spans.lost`, which reaches
the collector once it answers again. Public SDK API only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

logger = logging.getLogger("tandem_telemetry.delivery")

_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"


class DeliveryReport:
    """Shared by one pipeline's exporters: counts, the outage state, and the two log lines."""

    def __init__(self) -> None:
        self.exported = 0
        self.failed = 0
        self.queue_dropped = 0
        self.failing_since: float | None = None
        self._reason = ""
        self._failed_at_outage = 0
        self._dropped_at_outage = 0
        self._lock = threading.Lock()
        # Spans handed to the batch processor and not yet to the exporter.
        self.queued = 0
        self._queue_lock = threading.Lock()

    def count_losses_on(self, meter: Meter) -> None:
        """Publish the losses as `tandem.telemetry.spans.lost`, read at each metric export.

        Nothing is counted per span for it.
        """

        def observe(options: CallbackOptions) -> list[Observation]:
            return [
                Observation(self.failed, {"reason": "export_failed"}),
                Observation(self.queue_dropped, {"reason": "queue_full"}),
            ]

        meter.create_observable_counter(
            "tandem.telemetry.spans.lost",
            callbacks=[observe],
            unit="{span}",
            description="Spans that never reached the collector.",
        )

    @property
    def lost(self) -> int:
        return self.failed + self.queue_dropped

    def exporting(self) -> _Exporting:
        return _Exporting(self)

    def note_reason(self, message: str) -> None:
        self._reason = message

    def succeeded(self, spans: int) -> None:
        with self._lock:
            self.exported += spans
            if self.failing_since is None:
                return
            outage = time.monotonic() - self.failing_since
            failed, dropped = (
                self.failed - self._failed_at_outage,
                self.queue_dropped - self._dropped_at_outage,
            )
            self.failing_since = None
        logger.warning(
            "telemetry export recovered after %.1fs; %d spans were lost "
            "(%d in failed exports, %d dropped from the full queue)",
            outage,
            failed + dropped,
            failed,
            dropped,
            extra={"spans_lost": failed + dropped, "outage_seconds": round(outage, 1)},
        )

    def failed_export(self, spans: int) -> None:
        with self._lock:
            self.failed += spans
            starting = self.failing_since is None
            if starting:
                self.failing_since = time.monotonic()
                self._failed_at_outage = self.failed - spans
                self._dropped_at_outage = self.queue_dropped
        if starting:
            logger.warning(
                "telemetry export is failing (%s); spans are dropped until the collector "
                "answers, and a line will say how many",
                self._reason or "no reason given",
            )

    def admit(self, capacity: int) -> bool:
        """Take a span into the batch queue if fewer than `capacity` wait; else count it dropped."""
        with self._queue_lock:
            if self.queued >= capacity:
                self.queue_dropped += 1
                return False
            self.queued += 1
            return True

    def handed_to_exporter(self, spans: int) -> None:
        with self._queue_lock:
            self.queued = max(0, self.queued - spans)

    def close(self) -> None:
        """Say what was lost if the collector never came back."""
        if self.failing_since is not None:
            logger.warning(
                "telemetry export was still failing at shutdown; %d spans were lost in all",
                self.lost,
                extra={"spans_lost": self.lost},
            )


# The report whose export is running on this thread, if any. The exporter's
# own lines during that call are held back, and their reason kept.
_exporting_for = threading.local()


class _Exporting:
    """Marks the current thread as inside an export for `report`."""

    def __init__(self, report: DeliveryReport) -> None:
        self._report = report

    def __enter__(self) -> None:
        _exporting_for.report = self._report

    def __exit__(self, *exc: object) -> None:
        _exporting_for.report = None


class _HoldBack(logging.Filter):
    """Installed once per process on the exporter's logger; inert outside an accounted export."""

    def filter(self, record: logging.LogRecord) -> bool:
        report = getattr(_exporting_for, "report", None)
        if report is None:
            return True
        if record.levelno >= logging.WARNING:
            report.note_reason(record.getMessage())
        return False


_HOLD_BACK = _HoldBack()
logging.getLogger(_EXPORTER_LOGGER).addFilter(_HOLD_BACK)


class AccountedSpanExporter(SpanExporter):
    """Report each span export's outcome to a DeliveryReport."""

    def __init__(self, exporter: SpanExporter, report: DeliveryReport) -> None:
        self.exporter = exporter
        self._report = report
        self._shut_down = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._report.handed_to_exporter(len(spans))
        with self._report.exporting():
            result = self.exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            self._report.succeeded(len(spans))
        else:
            self._report.failed_export(len(spans))
        return result

    def shutdown(self) -> None:
        # Idempotent: a bounded shutdown may interrupt the exporter before the processor stops it.
        if not self._shut_down.is_set():
            self._shut_down.set()
            self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class AccountedBatchSpanProcessor(SpanProcessor):
    """The SDK's BatchSpanProcessor, behind a count of the spans it holds.

    When its queue is full the SDK drops the oldest span and logs a warning
    (de-duplicated, so the lines cannot be counted). Here a span that would
    not fit is dropped before it reaches the queue, and counted: the spans
    handed in and not yet handed to the exporter never exceed the queue's
    size, so the SDK's own queue never overflows. The cost on the request
    path is one lock and one comparison.
    """

    def __init__(
        self, exporter: AccountedSpanExporter, report: DeliveryReport, max_queue_size: int
    ) -> None:
        self._processor = BatchSpanProcessor(exporter, max_queue_size=max_queue_size)
        self._report = report
        self._capacity = max_queue_size

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        # The batch processor takes sampled spans only.
        if (
            context is not None
            and context.trace_flags.sampled
            and self._report.admit(self._capacity)
        ):
            self._processor.on_end(span)

    def shutdown(self) -> None:
        self._processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._processor.force_flush(timeout_millis)


class AccountedOTLPMetricExporter(OTLPMetricExporter):
    """The SDK's OTLP metric exporter, reporting to the same DeliveryReport.

    So an outage is one story for both signals.
    """

    def __init__(self, report: DeliveryReport) -> None:
        super().__init__()
        self._report = report
        self._shut_down = threading.Event()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        with self._report.exporting():
            result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        if result is MetricExportResult.SUCCESS:
            self._report.succeeded(0)
        else:
            self._report.failed_export(0)
        return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        # Idempotent: a bounded shutdown may interrupt the exporter before the reader stops it.
        if not self._shut_down.is_set():
            self._shut_down.set()
            super().shutdown(timeout_millis=timeout_millis, **kwargs)
