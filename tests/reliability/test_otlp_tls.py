"""OTLP over TLS to an external collector: OTEL_EXPORTER_OTLP_ENDPOINT=https://… with
OTEL_EXPORTER_OTLP_CERTIFICATE.

The local collector serves its gRPC receiver with a certificate from a test
CA made by trustme. Services given the CA bundle deliver the whole trace and
their metrics; services without it fail the TLS handshake (verification,
not plaintext fallback), deliver nothing, and still answer their requests.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import trustme

from tandem_localstack import Collector, Stack, free_collector_ports
from tandem_tracecheck import prometheus
from tandem_tracecheck.tempo import TempoClient
from tests.reliability import report
from tests.reliability.test_malformed_input import log_problems, start_services

TASKS = 2
SPANS = 1 + 6 * TASKS


def _tls_collector(stack: Stack, cert: str, key: str) -> Collector:
    ports = free_collector_ports()
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    process = stack.start(
        "collector",
        "tandem_collector",
        {},
        ("--host", "127.0.0.1", *args, "--tls-cert", cert, "--tls-key", key),
    )
    tempo_url = f"http://127.0.0.1:{ports['query']}"
    stack.wait_ready(process, f"{tempo_url}/ready")
    return Collector(
        f"https://127.0.0.1:{ports['grpc']}",
        tempo_url,
        f"http://127.0.0.1:{ports['prometheus']}/metrics",
    )


def test_otlp_over_tls(stack: Stack, tmp_path) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca_pem, cert_pem, key_pem = (
        tmp_path / "ca.pem",
        tmp_path / "collector.pem",
        tmp_path / "collector.key",
    )
    ca.cert_pem.write_to_path(str(ca_pem))
    server.cert_chain_pems[0].write_to_path(str(cert_pem))
    server.private_key_pem.write_to_path(str(key_pem))
    collector = _tls_collector(stack, str(cert_pem), str(key_pem))
    assert collector.grpc_endpoint.startswith("https://")

    trusted_env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(ca_pem)}
    trusted = start_services(stack, collector, gateway_env=trusted_env, worker_env=trusted_env)
    rss_before = report.rss_mb(trusted.gateway.popen.pid) + report.rss_mb(trusted.worker.popen.pid)
    # Without the CA bundle: the system roots do not know the test CA. A short shutdown bound
    # keeps the test quick.
    untrusted_env = {"TANDEM_SHUTDOWN_TIMEOUT": "1"}
    untrusted = start_services(
        stack, collector, suffix="-without-ca", gateway_env=untrusted_env, worker_env=untrusted_env
    )

    with httpx.Client(timeout=15) as client:
        ok = client.get(f"{trusted.gateway_url}/api/work", params={"tasks": TASKS})
        refused = client.get(f"{untrusted.gateway_url}/api/work", params={"tasks": TASKS})
    assert ok.status_code == 200, ok.text
    assert refused.status_code == 200, (
        "telemetry that cannot be delivered must not fail requests: " + refused.text
    )

    problems = []
    # Metrics take the same TLS channel.
    deadline, jobs = time.monotonic() + 10, set()
    while time.monotonic() < deadline and jobs != {"gateway", "worker"}:
        time.sleep(0.3)
        samples = prometheus.scrape(collector.metrics_url)
        jobs = {
            labels.get("job", "").rpartition("/")[2]
            for name, labels, _ in samples
            if name == "http_server_request_duration_seconds_count"
        }
    if jobs != {"gateway", "worker"}:
        problems.append(
            f"over TLS: request duration metrics from {sorted(jobs)}, expected gateway and worker"
        )

    rss_after = report.rss_mb(trusted.gateway.popen.pid) + report.rss_mb(trusted.worker.popen.pid)
    # Stopped, each service has flushed (or, without the CA, tried to): whatever reaches the
    # collector is there now, and nothing more can come.
    services = (untrusted.gateway, untrusted.worker, trusted.gateway, trusted.worker)
    with ThreadPoolExecutor(len(services)) as pool:
        list(pool.map(lambda process: process.stop(), services))
    with TempoClient(collector.tempo_url) as tempo:
        spans = tempo.trace(ok.json()["trace_id"])
        lost = tempo.trace(refused.json()["trace_id"])
    if len(spans) != SPANS:
        problems.append(
            f"over TLS: {len(spans)} spans arrived, expected {SPANS}: {[str(s) for s in spans]}"
        )
    if {s.service for s in spans} != {"gateway", "worker"}:
        problems.append(
            f"over TLS: spans from {sorted({s.service for s in spans})}, expected both services"
        )
    roots = [s for s in spans if s.parent_span_id is None]
    if [(r.service, r.name) for r in roots] != [("gateway", "GET /api/work")]:
        problems.append(
            f"over TLS: roots {[str(r) for r in roots]}, expected the gateway's GET /api/work alone"
        )
    if lost:
        problems.append(
            f"without the CA bundle, {len(lost)} spans arrived anyway: {[str(s) for s in lost]}"
        )
    for process in (untrusted.gateway, untrusted.worker):
        if not any(
            mark in process.output().lower()
            for mark in ("certificate_verify_failed", "handshake failed")
        ):
            problems.append(
                f"{process.name}: no certificate verification failure logged; did it send at "
                f"all?\n{process.output()[-2000:]}"
            )
    problems += log_problems(trusted.gateway, trusted.worker)

    report.record(
        report.Row(
            "OTLP over TLS",
            f"1 request (tasks={TASKS}) through services with the test CA, 1 through services "
            "without it; gRPC receiver with a trustme certificate",
            2,
            len(problems),
            SPANS,
            len(spans),
            rss_mb_before=rss_before,
            rss_mb_after=rss_after,
            notes="RSS: gateway + worker with the CA; without the CA bundle: TLS handshake "
            f"refused (CERTIFICATE_VERIFY_FAILED), {len(lost or [])} spans arrived, the request "
            "still answered 200",
        )
    )
    assert not problems, "\n".join(problems)
