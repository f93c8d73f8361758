"""End to end against ``python -m tandem_collector`` running as a subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import grpc
import httpx
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.collector.helpers import export, make_span, resource_spans, span_id, trace_id

MS = 1_000_000


def wait_for(predicate, timeout: float = 10.0):
    """Poll `predicate` until it is true (output written by another process has no event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_export_query_waterfall_and_graceful_stop(collector_process):
    proc = collector_process
    tp = TracerProvider(resource=Resource.create({"service.name": "gateway"}))
    tp.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(
                endpoint=proc.grpc_endpoint, insecure=True, compression=grpc.Compression.Gzip
            )
        )
    )
    tracer = tp.get_tracer("tandem.gateway")
    t0 = time.time_ns()
    root = tracer.start_span("GET /api/work", kind=trace_api.SpanKind.SERVER, start_time=t0)
    child = tracer.start_span(
        "SELECT work",
        kind=trace_api.SpanKind.CLIENT,
        context=trace_api.set_span_in_context(root),
        start_time=t0 + 5 * MS,
    )
    child.end(end_time=t0 + 15 * MS)
    root.end(end_time=t0 + 20 * MS)
    tp.shutdown()
    hex_id = format(root.get_span_context().trace_id, "032x")

    body = httpx.get(f"{proc.query_url}/api/v2/traces/{hex_id}").json()
    names = [
        s["name"]
        for b in body["trace"]["resourceSpans"]
        for ss in b["scopeSpans"]
        for s in ss["spans"]
    ]
    assert sorted(names) == ["GET /api/work", "SELECT work"]

    # The waterfall is printed once the trace has been quiet for --settle-seconds.
    header = f"trace {hex_id} · 2 spans · 20.00 ms"
    output = wait_for(lambda: header in proc.stdout() and proc.stdout())
    lines = output.splitlines()
    at = lines.index(header)
    assert lines[at + 1].startswith("gateway  GET /api/work [server]")
    assert lines[at + 2].startswith("  gateway  SELECT work [client]")
    assert lines[0] == (
        f"tandem-collector listening: otlp-grpc=grpc://127.0.0.1:{proc.grpc_port} "
        f"tempo-api=http://127.0.0.1:{proc.query_port} "
        f"prometheus=http://127.0.0.1:{proc.prometheus_port}/metrics"
    )

    proc.process.send_signal(signal.SIGTERM)
    assert proc.process.wait(5) == 0


def test_sigint_with_open_connections_stops(collector_process):
    proc = collector_process
    with httpx.Client() as client:  # a kept-alive connection the server must not wait on
        assert client.get(f"{proc.query_url}/ready").text == "ready"
        proc.process.send_signal(signal.SIGINT)
        assert proc.process.wait(5) == 0


def test_update_is_printed_again_marked_updated(collector_process):
    proc = collector_process
    tid = bytes.fromhex("00000000000000000000000000abcdef")
    export(proc.grpc_endpoint, resource_spans("w", [make_span(tid, span_id(1), "job")]))
    wait_for(lambda: f"trace {tid.hex()} · 1 spans" in proc.stdout())
    late = make_span(tid, span_id(2), "job", start_ms=1)
    export(proc.grpc_endpoint, resource_spans("w", [late]))
    wait_for(lambda: "· 2 spans · 2.00 ms (updated)" in proc.stdout())


def test_evictions_are_logged_and_exposed(start_collector):
    proc = start_collector("--max-traces", "1", "--quiet")
    for n in range(1, 4):
        export(proc.grpc_endpoint, resource_spans("w", [make_span(trace_id(n), span_id(1), "t")]))
    metrics = httpx.get(f"http://127.0.0.1:{proc.prometheus_port}/metrics").text
    assert "tandem_collector_traces_evicted_total 2\n" in metrics
    assert 'tandem_collector_spans_dropped_total{reason="trace_evicted"} 2\n' in metrics
    traces = f"{proc.query_url}/api/v2/traces"
    assert httpx.get(f"{traces}/{1:032x}").json() == {"trace": {}, "metrics": {}}
    assert httpx.get(f"{traces}/{3:032x}").json()["trace"]["resourceSpans"]
    proc.process.send_signal(signal.SIGTERM)
    assert proc.process.wait(5) == 0
    assert "2 trace(s) (2 spans) evicted by --max-traces=1" in proc.stderr()
    assert proc.stdout().count("\n") == 1  # --quiet: only the startup line


def test_busy_port_exits_non_zero(collector_process):
    busy = subprocess.run(
        [
            sys.executable,
            "-m",
            "tandem_collector",
            "--grpc-port",
            "0",
            "--prometheus-port",
            "0",
            "--query-port",
            str(collector_process.query_port),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert busy.returncode == 1
    assert "cannot bind the query API" in busy.stderr
