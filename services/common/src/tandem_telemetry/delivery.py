"""Telemetry delivery accounting: what a collector outage cost, said once, never per batch.

The OTLP exporters log every retry and every failed batch, and the batch
processor logs a full queue; during an outage that is a stream of lines for
as long as it lasts. Here the exporters are wrapped: their own lines are
held back, and the pipeline says two things instead: one warning when
exports start failing (with the exporter's reason), one line when they
recover, naming how many spans were lost in between and why. The losses
are also published as `tandem.telemetry.spans.lost`, which reaches the
collector once it answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

logger = logging.getLogger("tandem_telemetry.delivery")

_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"
_PROCESSOR_LOGGER = "opentelemetry.sdk._shared_internal"


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

    def count_losses_on(self, meter: Meter) -> None:
        """Publish the losses as `tandem.telemetry.spans.lost`, read at each metric export (no cost per span)."""

        def observe(options: CallbackOptions) -> list[Observation]:
            return [Observation(self.failed, {"reason": "export_failed"}), Observation(self.queue_dropped, {"reason": "queue_full"})]

        meter.create_observable_counter(
            "tandem.telemetry.spans.lost", callbacks=[observe], unit="{span}", description="Spans that never reached the collector."
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
            failed, dropped = self.failed - self._failed_at_outage, self.queue_dropped - self._dropped_at_outage
            self.failing_since = None
        logger.warning(
            "telemetry export recovered after %.1fs; %d spans were lost (%d in failed exports, %d dropped from the full queue)",
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
                "telemetry export is failing (%s); spans are dropped until the collector answers, and a line will say how many",
                self._reason or "no reason given",
            )

    def dropped_from_queue(self) -> None:
        # On the request path: one increment. (A lost increment between threads would only undercount a loss.)
        self.queue_dropped += 1

    def close(self) -> None:
        """Say what was lost if the collector never came back."""
        if self.failing_since is not None:
            logger.warning("telemetry export was still failing at shutdown; %d spans were lost in all", self.lost, extra={"spans_lost": self.lost})


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
    """Installed once per process on the SDK's two loggers; inert outside an accounted export."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == _PROCESSOR_LOGGER:
            # "Queue full, dropping Span.": AccountedBatchSpanProcessor counts these (and rarely lets one through).
            return not str(record.msg).startswith("Queue full")
        report = getattr(_exporting_for, "report", None)
        if report is None:
            return True
        if record.levelno >= logging.WARNING:
            report.note_reason(record.getMessage())
        return False


_HOLD_BACK = _HoldBack()
logging.getLogger(_EXPORTER_LOGGER).addFilter(_HOLD_BACK)
logging.getLogger(_PROCESSOR_LOGGER).addFilter(_HOLD_BACK)


class AccountedSpanExporter(SpanExporter):
    """Report each span export's outcome to a DeliveryReport."""

    def __init__(self, exporter: SpanExporter, report: DeliveryReport) -> None:
        self.exporter = exporter
        self._report = report
        self._shut_down = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
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


class AccountedMetricExporter(MetricExporter):
    """Report metric exports to the same DeliveryReport, so an outage is one story for both signals."""

    def __init__(self, exporter: MetricExporter, report: DeliveryReport) -> None:
        super().__init__(
            preferred_temporality=exporter._preferred_temporality,  # noqa: SLF001 - pass the wrapped exporter's choices through
            preferred_aggregation=exporter._preferred_aggregation,  # noqa: SLF001
        )
        self.exporter = exporter
        self._report = report
        self._shut_down = threading.Event()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> MetricExportResult:
        with self._report.exporting():
            result = self.exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        if result is MetricExportResult.SUCCESS:
            self._report.succeeded(0)
        else:
            self._report.failed_export(0)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        if not self._shut_down.is_set():
            self._shut_down.set()
            self.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)


class AccountedBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that counts the spans a full queue costs, cheaply.

    When the queue is full the SDK drops its oldest span and logs a warning
    for every one, which during an outage puts a log call on the request path
    of each span. Here the new span is dropped and counted instead: one
    comparison, no log call. The queue is the SDK's own (an internal of
    opentelemetry-sdk 1.3x/1.4x, looked up once).
    """

    def __init__(self, exporter: SpanExporter, report: DeliveryReport) -> None:
        super().__init__(exporter)
        self._report = report
        batch = self._batch_processor
        self._queue = batch._queue  # noqa: SLF001
        self._max_queue_size = batch._max_queue_size  # noqa: SLF001

    def on_end(self, span: ReadableSpan) -> None:
        if len(self._queue) >= self._max_queue_size:
            if span.context and span.context.trace_flags.sampled:
                self._report.dropped_from_queue()
            return
        super().on_end(span)
