"""Span delivery accounting: count what a collector outage cost, say it once, never per batch."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

logger = logging.getLogger("tandem_telemetry.delivery")

# The OTLP exporter logs every retry and every failed batch; during an outage
# that is a line per batch for as long as it lasts.
_EXPORTER_LOGGERS = ("opentelemetry.exporter.otlp.proto.grpc.exporter",)


class DeliveryAccountingExporter(SpanExporter):
    """Wrap a span exporter: count spans exported and lost, and log outages as two lines.

    One warning when exports start failing (after the wrapped exporter's own
    first report, which says why), one line when they recover, naming how many
    spans were lost in between.
    """

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.exported = 0
        self.lost = 0
        self._lost_in_outage = 0
        self._failing = False
        self._lock = threading.Lock()
        self._quiet_filter = _QuietDuringOutage(self)
        for name in _EXPORTER_LOGGERS:
            logging.getLogger(name).addFilter(self._quiet_filter)

    @property
    def failing(self) -> bool:
        """True from a failed export until the next successful one."""
        return self._failing

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.exporter.export(spans)
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
                if self._failing:
                    self._failing = False
                    logger.warning(
                        "span export recovered; %d spans were lost while the collector was unreachable",
                        self._lost_in_outage,
                        extra={"spans_lost": self._lost_in_outage},
                    )
                    self._lost_in_outage = 0
            else:
                self.lost += len(spans)
                self._lost_in_outage += len(spans)
                if not self._failing:
                    self._failing = True
                    logger.warning(
                        "span export is failing; spans are being dropped until the collector answers again",
                        extra={"spans_lost": self._lost_in_outage},
                    )
        return result

    def shutdown(self) -> None:
        for name in _EXPORTER_LOGGERS:
            logging.getLogger(name).removeFilter(self._quiet_filter)
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class _QuietDuringOutage(logging.Filter):
    def __init__(self, accounting: DeliveryAccountingExporter) -> None:
        super().__init__()
        self._accounting = accounting

    def filter(self, record: logging.LogRecord) -> bool:
        return not self._accounting.failing
