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

Spans and metrics are told apart: each signal has its own outage and its own
lines, for an endpoint may take one and not the other. A trace store reached
directly (Tempo, Jaeger) takes OTLP traces and answers every metric export
with UNIMPLEMENTED; that is said once, with what to do about it, and not
again until the metric exports succeed or fail for another reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

logger = logging.getLogger("tandem_telemetry.delivery")

_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"

# The two ways a metric export fails, as far as the log is concerned: the
# endpoint does not take metrics at all, or anything else (an outage).
_NOT_ACCEPTED = "not_accepted"
_FAILING = "failing"


class ExportAttempt:
    """What the exporter said during one export, held back: its last warning or error, and the
    last gRPC status code it named (the SDK passes it as an argument of its log line)."""

    def __init__(self) -> None:
        self.reason = ""
        self.status: grpc.StatusCode | None = None

    def heard(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            return
        self.reason = record.getMessage()
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            if isinstance(arg, grpc.StatusCode):
                self.status = arg


class DeliveryReport:
    """One pipeline's delivery: span counts, each signal's outage state, and their log lines."""

    def __init__(self) -> None:
        self.exported = 0
        self.failed = 0
        self.queue_dropped = 0
        self.failing_since: float | None = None
        self._failed_at_outage = 0
        self._dropped_at_outage = 0
        self._lock = threading.Lock()
        # Spans handed to the batch processor and not yet to the exporter.
        self.queued = 0
        self._queue_lock = threading.Lock()
        # Metric exports: since when they fail, and how (_NOT_ACCEPTED or _FAILING).
        self.metrics_failing_since: float | None = None
        self._metrics_failure: str | None = None
        self._metrics_lock = threading.Lock()

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

    def succeeded(self, spans: int) -> None:
        """A span export succeeded: the end of a span outage, if one was under way."""
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
            "span export recovered after %.1fs; %d spans were lost "
            "(%d in failed exports, %d dropped from the full queue)",
            outage,
            failed + dropped,
            failed,
            dropped,
            extra={
                "signal": "traces",
                "spans_lost": failed + dropped,
                "outage_seconds": round(outage, 1),
            },
        )

    def failed_export(self, spans: int, reason: str = "") -> None:
        """A span export failed: the start of a span outage, unless one is under way."""
        with self._lock:
            self.failed += spans
            starting = self.failing_since is None
            if starting:
                self.failing_since = time.monotonic()
                self._failed_at_outage = self.failed - spans
                self._dropped_at_outage = self.queue_dropped
        if starting:
            logger.warning(
                "span export is failing (%s); spans are dropped until the collector "
                "answers, and a line will say how many",
                reason or "no reason given",
                extra={"signal": "traces"},
            )

    def metrics_succeeded(self) -> None:
        """A metric export succeeded: the end of a metric outage, if one was under way."""
        with self._metrics_lock:
            if self.metrics_failing_since is None:
                return
            outage = time.monotonic() - self.metrics_failing_since
            self.metrics_failing_since = self._metrics_failure = None
        logger.warning(
            "metric export resumed after %.1fs",
            outage,
            extra={"signal": "metrics", "outage_seconds": round(outage, 1)},
        )

    def metrics_failed(self, attempt: ExportAttempt) -> None:
        """A metric export failed: a line when metric exports start failing, or start failing
        otherwise (the endpoint takes no metrics, or it does and fails); else none."""
        failure = _NOT_ACCEPTED if attempt.status is grpc.StatusCode.UNIMPLEMENTED else _FAILING
        with self._metrics_lock:
            if failure == self._metrics_failure:
                return
            self._metrics_failure = failure
            if self.metrics_failing_since is None:
                self.metrics_failing_since = time.monotonic()
        reason = attempt.reason or "no reason given"
        if failure == _NOT_ACCEPTED:
            logger.warning(
                "metric export refused (%s): this endpoint does not accept OTLP metrics, as when "
                "a trace store such as Tempo or Jaeger is reached directly; point "
                "OTEL_EXPORTER_OTLP_ENDPOINT at an OpenTelemetry Collector, or set "
                "OTEL_METRICS_EXPORTER=none. Spans are not affected; metrics are dropped, with "
                "no further line until this changes",
                reason,
                extra={"signal": "metrics"},
            )
        else:
            # Not "is failing" nor "recovered": those words belong to the span lines.
            logger.warning(
                "metric export failed (%s); metrics are dropped until the collector answers, "
                "and a line will say when it does",
                reason,
                extra={"signal": "metrics"},
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
        """Say what was lost if the collector never came back for spans."""
        if self.failing_since is not None:
            logger.warning(
                "span export was still failing at shutdown; %d spans were lost in all",
                self.lost,
                extra={"signal": "traces", "spans_lost": self.lost},
            )


# The export running on this thread, if any. The exporter's own lines during
# it are held back, and what they say is kept on it.
_exporting = threading.local()


@contextmanager
def held_back() -> Iterator[ExportAttempt]:
    """Run an export with the exporter's lines held back; what they said is on the attempt."""
    attempt = ExportAttempt()
    _exporting.attempt = attempt
    try:
        yield attempt
    finally:
        _exporting.attempt = None


class _HoldBack(logging.Filter):
    """Installed once per process on the exporter's logger; inert outside an accounted export."""

    def filter(self, record: logging.LogRecord) -> bool:
        attempt: ExportAttempt | None = getattr(_exporting, "attempt", None)
        if attempt is None:
            return True
        attempt.heard(record)
        return False


_HOLD_BACK = _HoldBack()
# First, ahead of the SDK's DuplicateFilter: that one drops a line with the same format string
# as one in the last 20 s (a metric export's failure and a span export's share theirs), and a
# dropped line never reaches the next filter; the failure's reason would be lost with it.
logging.getLogger(_EXPORTER_LOGGER).filters.insert(0, _HOLD_BACK)


class AccountedSpanExporter(SpanExporter):
    """Report each span export's outcome to a DeliveryReport."""

    def __init__(self, exporter: SpanExporter, report: DeliveryReport) -> None:
        self.exporter = exporter
        self._report = report
        self._shut_down = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._report.handed_to_exporter(len(spans))
        with held_back() as attempt:
            result = self.exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            self._report.succeeded(len(spans))
        else:
            self._report.failed_export(len(spans), attempt.reason)
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
    """The SDK's OTLP metric exporter, reporting to the pipeline's DeliveryReport.

    As metric exports: their failures are never blamed on spans, nor their successes taken
    for the end of a span outage.
    """

    def __init__(self, report: DeliveryReport, **exporter_arguments: Any) -> None:
        super().__init__(**exporter_arguments)
        self._report = report
        self._shut_down = threading.Event()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        with held_back() as attempt:
            result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        if result is MetricExportResult.SUCCESS:
            self._report.metrics_succeeded()
        else:
            self._report.metrics_failed(attempt)
        return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        # Idempotent: a bounded shutdown may interrupt the exporter before the reader stops it.
        if not self._shut_down.is_set():
            self._shut_down.set()
            super().shutdown(timeout_millis=timeout_millis, **kwargs)
