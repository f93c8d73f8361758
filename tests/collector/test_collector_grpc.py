"""OTLP/gRPC export with the real SDK exporter, then the Tempo API (in-process)."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from tandem_collector.testing import running_collector

MS = 1_000_000


def provider(endpoint: str, service: str, **exporter_args) -> TracerProvider:
    tp = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "tandem"})
    )
    exporter = OTLPSpanExporter(endpoint=endpoint, **exporter_args)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


def export_gateway_worker_trace(endpoint: str, **exporter_args) -> tuple[int, int, int]:
    """gateway SERVER -> gateway CLIENT -> worker SERVER, with exact timestamps."""
    gateway = provider(endpoint, "gateway", **exporter_args)
    worker = provider(endpoint, "worker", **exporter_args)
    t0 = time.time_ns()
    g, w = gateway.get_tracer("tandem.gateway"), worker.get_tracer("tandem.worker")
    root = g.start_span(
        "GET /api/work",
        kind=trace_api.SpanKind.SERVER,
        start_time=t0,
        attributes={"http.route": "/api/work"},
    )
    client = g.start_span(
        "POST",
        kind=trace_api.SpanKind.CLIENT,
        start_time=t0 + 2 * MS,
        context=trace_api.set_span_in_context(root),
    )
    server = w.start_span(
        "POST /work",
        kind=trace_api.SpanKind.SERVER,
        start_time=t0 + 3 * MS,
        context=trace_api.set_span_in_context(client),
        attributes={"http.route": "/work"},
    )
    server.end(end_time=t0 + 9 * MS)
    client.end(end_time=t0 + 10 * MS)
    root.end(end_time=t0 + 12 * MS)
    gateway.shutdown()
    worker.shutdown()
    return (
        root.get_span_context().trace_id,
        root.get_span_context().span_id,
        client.get_span_context().span_id,
    )


def test_sdk_grpc_export_gzip_then_query(collector):
    addresses = collector.addresses
    trace_id, root_id, client_id = export_gateway_worker_trace(
        addresses.grpc_endpoint, insecure=True, compression=grpc.Compression.Gzip
    )
    body = httpx.get(f"{addresses.query_url}/api/v2/traces/{trace_id:032x}").json()
    spans = {
        s["name"]: (s, b)
        for b in body["trace"]["resourceSpans"]
        for ss in b["scopeSpans"]
        for s in ss["spans"]
    }
    assert set(spans) == {"GET /api/work", "POST", "POST /work"}
    root, root_batch = spans["GET /api/work"]
    assert root["traceId"] == base64.b64encode(trace_id.to_bytes(16, "big")).decode()
    assert root["spanId"] == base64.b64encode(root_id.to_bytes(8, "big")).decode()
    assert (
        spans["POST /work"][0]["parentSpanId"]
        == base64.b64encode(client_id.to_bytes(8, "big")).decode()
    )
    assert spans["POST /work"][0]["kind"] == "SPAN_KIND_SERVER"
    assert {"key": "service.name", "value": {"stringValue": "gateway"}} in root_batch["resource"][
        "attributes"
    ]
    assert spans["POST /work"][1]["scopeSpans"][0]["scope"]["name"] == "tandem.worker"


def test_span_limit_is_reported_to_the_sdk_as_partial_success():
    with running_collector(max_spans_per_trace=2) as running:
        export_gateway_worker_trace(running.addresses.grpc_endpoint, insecure=True)
        stats = running.call(lambda c: c.traces.stats)
        assert (stats.spans_accepted, stats.spans_dropped_limit) == (2, 1)
        metrics = httpx.get(f"{running.addresses.prometheus_url}/metrics").text
        assert 'tandem_collector_spans_dropped_total{reason="span_limit"} 1\n' in metrics


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_grpc_receiver_with_tls(tmp_path):
    cert, key = _self_signed(tmp_path)
    with running_collector(tls_cert=str(cert), tls_key=str(key)) as running:
        addresses = running.addresses
        assert "grpcs://" in addresses.describe()
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        endpoint = f"localhost:{addresses.grpc_port}"
        trace_id, _, _ = export_gateway_worker_trace(endpoint, credentials=credentials)
        response = httpx.get(f"{addresses.query_url}/api/v2/traces/{trace_id:032x}")
        batches = response.json()["trace"]["resourceSpans"]
        assert sum(len(ss["spans"]) for b in batches for ss in b["scopeSpans"]) == 3

        # A plaintext client cannot talk to the TLS port.
        plain = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=2)
        span = TracerProvider().get_tracer("t").start_span("plaintext")
        span.end()
        assert plain.export([span]) is SpanExportResult.FAILURE
        plain.shutdown()
        assert running.call(lambda c: len(c.traces)) == 1


def test_busy_port_fails_to_start():
    with running_collector() as first:
        with (
            pytest.raises(OSError, match="cannot bind"),
            running_collector(grpc_port=first.addresses.grpc_port),
        ):
            pass
        with (
            pytest.raises(OSError, match="cannot bind the query API"),
            running_collector(query_port=first.addresses.query_port),
        ):
            pass
