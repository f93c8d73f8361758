"""The services, the real Collector running the chart's configuration, and the local trace
store: the end-to-end checks `helm test` runs, and a clean stop that loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.request import urlopen

import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tandem_localstack import Collector, OtelcolPorts, Pair, Stack
from tandem_tracecheck.tempo import TempoClient


def test_tracecheck_passes_through_the_real_collector(pair: Pair, collector: Collector) -> None:
    """tasks=1 and 3, no traceparent, fail=worker, baggage, and the duration metrics as the
    Collector's own Prometheus exporter names them."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tandem_tracecheck",
            f"--gateway-url={pair.gateway_url}",
            f"--tempo-url={collector.tempo_url}",
            f"--metrics-url={collector.metrics_url}",
            f"--gateway-internal-port={pair.ports.gateway_internal}",
            "--trace-timeout=30",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "request duration metrics" in result.stdout


def test_the_health_endpoint_says_the_collector_is_up(
    collector: Collector, otelcol_ports: OtelcolPorts, chart_config: Path
) -> None:
    exporter = yaml.safe_load(chart_config.read_text())["exporters"]["otlp_grpc/tempo"]
    queue_size = exporter["sending_queue"]["queue_size"]
    with urlopen(otelcol_ports.health_url, timeout=30) as response:
        assert response.status == 200
        assert json.load(response)["status"] == "Server available"
    # The Collector's own metrics, which the pipeline-health alerts read; served from the
    # start (counters only once they move): the exporter queue's bound, in spans.
    with urlopen(otelcol_ports.telemetry_url, timeout=30) as response:
        queue = 'otelcol_exporter_queue_capacity{data_type="traces",exporter="otlp_grpc/tempo"} '
        assert f"{queue}{queue_size}".encode() in response.read()


def test_sigterm_delivers_every_span_it_accepted(
    stack: Stack, store: Collector, otelcol: Path, chart_config: Path
) -> None:
    """Spans the Collector has acknowledged, still in its batch (1 s), reach the store when it
    is stopped with SIGTERM, and it exits 0."""
    ports = OtelcolPorts.free()
    stopping = stack.start_otelcol(otelcol, chart_config, store, ports, name="otelcol-stopped")
    made = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(made))
    tracer = provider.get_tracer("sigterm-test")
    with tracer.start_as_current_span("root") as root:
        for index in range(49):
            tracer.start_span(f"child {index}").end()
    spans = made.get_finished_spans()
    exporter = OTLPSpanExporter(endpoint=stopping.grpc_endpoint, insecure=True, timeout=10)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()

    process = next(p for p in stack.processes if p.name == "otelcol-stopped")
    assert process.stop(timeout=30) == 0, process.output()
    trace_id = format(root.get_span_context().trace_id, "032x")
    with TempoClient(store.tempo_url) as tempo:
        stored = tempo.trace(trace_id)
    assert sorted(span.name for span in stored) == sorted(span.name for span in spans)
    assert len(stored) == 50
