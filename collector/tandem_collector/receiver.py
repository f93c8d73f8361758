"""What the OTLP/gRPC services hand their requests to, plus the collector's self-metrics."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tandem_collector.metrics_store import MetricsStore
from tandem_collector.prometheus import COUNTER, GAUGE, Family
from tandem_collector.store import TraceStore


@dataclass
class Receiver:
    """Takes export requests and answers with OTLP responses."""

    traces: TraceStore
    metrics: MetricsStore

    def export_traces(self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
        result = self.traces.add(request.resource_spans)
        response = ExportTraceServiceResponse()
        if result.rejected:
            # OTLP partial success: the client learns what was dropped and why.
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = result.message
        return response

    def export_metrics(self, request: ExportMetricsServiceRequest) -> ExportMetricsServiceResponse:
        rejected = self.metrics.add(request.resource_metrics)
        response = ExportMetricsServiceResponse()
        if rejected:
            response.partial_success.rejected_data_points = rejected
            response.partial_success.error_message = (
                f"{rejected} data point(s) not representable in Prometheus text format "
                "(exponential histogram, delta non-monotonic sum, unspecified temporality, "
                "or out of order)"
            )
        return response

    def self_metrics(self) -> list[Family]:
        """``tandem_collector_*`` families for the /metrics pages."""
        trace_stats = self.traces.stats
        spans_dropped = Family(
            "tandem_collector_spans_dropped_total",
            COUNTER,
            "Spans not stored, by reason (invalid trace id, per-trace span limit, "
            "or evicted with their trace).",
        )
        spans_dropped.add_value({"reason": "invalid_trace_id"}, trace_stats.spans_rejected_invalid)
        spans_dropped.add_value({"reason": "span_limit"}, trace_stats.spans_dropped_limit)
        spans_dropped.add_value({"reason": "trace_evicted"}, trace_stats.spans_evicted)
        families = [
            _single(
                "tandem_collector_spans_received_total",
                COUNTER,
                "Spans received over OTLP.",
                trace_stats.spans_received,
            ),
            _single(
                "tandem_collector_spans_accepted_total",
                COUNTER,
                "Spans stored.",
                trace_stats.spans_accepted,
            ),
            spans_dropped,
            _single(
                "tandem_collector_traces_evicted_total",
                COUNTER,
                "Traces evicted to stay within --max-traces.",
                trace_stats.traces_evicted,
            ),
            _single(
                "tandem_collector_traces",
                GAUGE,
                "Traces currently held in memory.",
                len(self.traces),
            ),
            _single(
                "tandem_collector_metric_points_received_total",
                COUNTER,
                "Metric data points received over OTLP.",
                self.metrics.stats.points_received,
            ),
            _single(
                "tandem_collector_metric_points_dropped_total",
                COUNTER,
                "Metric data points that could not be exposed.",
                self.metrics.stats.points_dropped,
            ),
        ]
        return families


def _single(name: str, type_: str, help_text: str, value: float) -> Family:
    family = Family(name, type_, help_text)
    family.add_value({}, value)
    return family
