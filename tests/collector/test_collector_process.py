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

MS = 1_000_000


def wait_for(predicate, timeout: float = 10.0):
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
                endpoint=f"127.0.0.1:{proc.grpc_port}",
                insecure=True,
                compression=grpc.Compression.Gzip,
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

    trace = httpx.get(f"{proc.query_url}/api/traces/{hex_id}").json()
    names = [s["name"] for b in trace["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]
    assert sorted(names) == ["GET /api/work", "SELECT work"]
    found = httpx.get(
        f"{proc.query_url}/api/search", params={"q": '{ resource.service.name = "gateway" }'}
    ).json()
    assert [t["traceID"] for t in found["traces"]] == [hex_id.lstrip("0")]

    # The waterfall is printed once the trace has been quiet for --settle-seconds.
    header = f"trace {hex_id} · 2 spans · 20.00 ms"
    output = wait_for(lambda: header in proc.stdout() and proc.stdout())
    lines = output.splitlines()
    at = lines.index(header)
    assert lines[at + 1].startswith("gateway  GET /api/work [server]")
    assert lines[at + 2].startswith("  gateway  SELECT work [client]")
    assert lines[0].startswith("tandem-collector listening: ")
    assert f"otlp-grpc=grpc://127.0.0.1:{proc.grpc_port}" in lines[0]

    started = time.monotonic()
    proc.process.send_signal(signal.SIGTERM)
    assert proc.process.wait(5) == 0
    assert time.monotonic() - started < 2.5


def test_sigint_with_open_connections_stops_within_two_seconds(collector_process):
    proc = collector_process
    with httpx.Client() as client:  # a kept-alive connection the server must not wait on
        assert client.get(f"{proc.query_url}/ready").text == "ready"
        started = time.monotonic()
        proc.process.send_signal(signal.SIGINT)
        assert proc.process.wait(5) == 0
    assert time.monotonic() - started < 2.5


def test_update_is_printed_again_marked_updated(collector_process):
    proc = collector_process
    body_for = lambda span_hex, start: {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "w"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "00000000000000000000000000abcdef",
                                "spanId": span_hex,
                                "name": "job",
                                "startTimeUnixNano": str(start),
                                "endTimeUnixNano": str(start + 1_000_000),
                            }
                        ]
                    }
                ],
            }
        ]
    }
    url = f"http://127.0.0.1:{proc.http_port}/v1/traces"
    assert httpx.post(url, json=body_for("0000000000000001", 10**18)).status_code == 200
    wait_for(lambda: "trace 00000000000000000000000000abcdef · 1 spans" in proc.stdout())
    assert httpx.post(url, json=body_for("0000000000000002", 10**18 + 10**6)).status_code == 200
    wait_for(lambda: "· 2 spans · 2.00 ms (updated)" in proc.stdout())


def test_evictions_are_logged_and_exposed(start_collector):
    proc = start_collector("--max-traces", "1", "--quiet")
    url = f"http://127.0.0.1:{proc.http_port}/v1/traces"
    for n in range(1, 4):
        body = {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": f"{n:032x}",
                                    "spanId": "0000000000000001",
                                    "name": f"t{n}",
                                    "startTimeUnixNano": "1000",
                                    "endTimeUnixNano": "2000",
                                }
                            ]
                        }
                    ]
                }
            ]
        }
        assert httpx.post(url, json=body).status_code == 200
    metrics = httpx.get(f"http://127.0.0.1:{proc.prometheus_port}/metrics").text
    assert "tandem_collector_traces_evicted_total 2\n" in metrics
    assert 'tandem_collector_spans_dropped_total{reason="trace_evicted"} 2\n' in metrics
    assert httpx.get(f"{proc.query_url}/api/traces/{1:032x}").status_code == 404
    assert httpx.get(f"{proc.query_url}/api/traces/{3:032x}").status_code == 200
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
            "--http-port",
            "0",
            "--prometheus-port",
            "0",
            "--query-port",
            str(collector_process.query_port),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert busy.returncode == 1
    assert "cannot bind the query API" in busy.stderr


def test_help_lists_options():
    result = subprocess.run(
        [sys.executable, "-m", "tandem_collector", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    for option in (
        "--grpc-port",
        "--http-port",
        "--query-port",
        "--prometheus-port",
        "--max-traces",
        "--max-spans-per-trace",
        "--settle-seconds",
        "--quiet",
        "--host",
        "--tls-cert",
        "--tls-key",
        "TANDEM_COLLECTOR_GRPC_PORT",
    ):
        assert option in result.stdout
