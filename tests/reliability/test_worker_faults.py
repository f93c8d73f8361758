"""The worker down, slow or failing: the gateway answers 503, 504 or 502 within its budget,
with ERROR spans, and leaks nothing."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tandem_localstack import Collector, PairPorts, Stack, loopback_url
from tandem_tracecheck import TempoClient
from tests.reliability import report
from tests.reliability.load import drive

WORKER_TIMEOUT = 1.0
# A request may take the gateway's budget plus scheduling slack, never more: the client gives
# up after this.
CLIENT_TIMEOUT = WORKER_TIMEOUT + 3.0

CASES = {
    # scenario: (query, worker state, expected status, expected error, client span error.type)
    "worker down": ("tasks=2", "down", 503, "worker_unavailable", "ConnectError"),
    "worker slow": ("tasks=2&delay_ms=3000", "up", 504, "worker_timeout", "TotalTimeout"),
    "worker returns 500": ("tasks=2&fail=worker", "up", 502, "worker_error", "500"),
}


def fds_back_to(pid: int, limit: int, timeout: float) -> int:
    """The process's open descriptors, as soon as they are `limit` or fewer; after `timeout`,
    however many there are."""
    deadline = time.monotonic() + timeout
    while (count := report.open_fds(pid)) > limit and time.monotonic() < deadline:
        time.sleep(0.5)
    return count


@pytest.mark.parametrize("scenario", list(CASES))
def test_gateway_answers_within_its_budget(
    stack: Stack, collector: Collector, scenario: str
) -> None:
    query, worker_state, status, error, client_error = CASES[scenario]
    ports = PairPorts.free()
    if worker_state == "up":
        stack.start_service(
            "worker",
            ports.worker,
            collector,
            GATEWAY_INTERNAL_URL=loopback_url(ports.gateway_internal),
        )
    gateway = stack.start_service(
        "gateway",
        ports.gateway,
        collector,
        INTERNAL_PORT=str(ports.gateway_internal),
        WORKER_URL=loopback_url(ports.worker),
        WORKER_TIMEOUT=str(WORKER_TIMEOUT),
    )
    url = f"{loopback_url(ports.gateway)}/api/work?{query}"
    # One traced request first, awaited in Tempo: the gateway's export connection is then open,
    # so the descriptors counted next are its steady state. "connection: close" lets hypercorn
    # release the socket at once, instead of at its keep-alive timeout.
    response = httpx.get(
        url,
        headers={"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01", "connection": "close"},
        timeout=CLIENT_TIMEOUT,
    )
    assert response.status_code == status and response.json()["error"] == error
    with TempoClient(collector.tempo_url) as tempo:
        spans = tempo.wait_for_trace("ab" * 16, spans=3, timeout=20, settle=0.5)
    root = [s for s in spans if s.kind == "SERVER" and s.name == "GET /api/work"]
    clients = [s for s in spans if s.kind == "CLIENT" and s.service == "gateway"]
    assert (
        len(root) == 1
        and root[0].status == "ERROR"
        and root[0].attributes["http.response.status_code"] == status
    )
    assert clients and all(
        s.status == "ERROR" and s.attributes["error.type"] == client_error for s in clients
    )
    fds_before = report.open_fds(gateway.popen.pid)

    result = asyncio.run(
        drive(
            url,
            concurrency=8,
            # Each slow request takes the whole 1 s budget: 4 rounds of 8 show the same.
            requests=32 if worker_state == "up" and "delay" in query else 200,
            timeout=CLIENT_TIMEOUT,
            # hypercorn notices a client closed an idle keep-alive connection only at its 5 s
            # keep-alive timeout; a connection closed with its answer it lets go of at once.
            close_connections=True,
        )
    )

    # On a loaded machine the sockets may still take a moment to go. Wait for that, not for a
    # fixed time: a leak never comes back.
    fds_after = fds_back_to(gateway.popen.pid, fds_before + 2, timeout=60)
    report.record(
        report.Row(
            scenario,
            f"{result.requests} × /api/work?{query}, 8 concurrent, a connection each, "
            f"WORKER_TIMEOUT={WORKER_TIMEOUT:g}s",
            result.requests,
            sum(1 for s in result.statuses if s != status) + len(result.errors),
            None,
            None,
            None,
            None,
            None,
            f"every answer {status} {error}; gateway fds {fds_before} → {fds_after}",
        )
    )
    assert result.errors == [], (
        f"requests hung past {CLIENT_TIMEOUT}s or broke: {result.errors[:3]}"
    )
    assert set(result.statuses) == {status}
    assert fds_after <= fds_before + 2, (
        f"gateway file descriptors grew from {fds_before} to {fds_after}"
    )
