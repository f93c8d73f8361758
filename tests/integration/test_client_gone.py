"""A client that leaves mid-request, on real processes: its work is cancelled at once.

Hypercorn does not cancel an app whose client has gone; tandem_service's serving layer does
(ClientWatch). Abandoned requests must free their admission slots straight away, end their
SERVER span with error.type=client_disconnected and no status code, and close their calls
to the worker, which then cancels its own work the same way. Every wait below is on an
event (spans or metrics arriving); the worker's delay is only there to be cut short.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tandem_localstack import Collector, Stack
from tandem_service import CLIENT_GONE_ERROR_TYPE
from tandem_tracecheck import TempoClient, prometheus
from tandem_tracecheck.scenarios import REQUEST_DURATION, new_traceparent
from tandem_tracecheck.tree import Expect, match_tree

pytestmark = pytest.mark.local_stack

ABANDONED = 3
TASKS = 2
# The worker's slow work, the longest it accepts: nothing waits for it, it is cut short.
DELAY_MS = 5000
# A guard against a hang, never a synchronisation (both CPU cores may be busy).
HANG_GUARD = 60.0
# Absent: nothing was answered, so no status code is invented.
NO_STATUS = {"http.response.status_code": None}


def abandoned_trace(tasks: int) -> Expect:
    """What a request abandoned while the worker computes leaves: every SERVER span
    client_disconnected, each call cancelled, no quota call and no "publish result"."""
    gone = {"error.type": CLIENT_GONE_ERROR_TYPE, **NO_STATUS}
    task = Expect(
        "worker",
        "SERVER",
        "POST /tasks",
        {"http.route": "/tasks", **gone},
        status="ERROR",
        remote_parent=True,
        children=(Expect("worker", "INTERNAL", "compute"),),
    )
    call = Expect(
        "gateway",
        "CLIENT",
        "POST",
        {"error.type": "CancelledError", **NO_STATUS},
        status="ERROR",
        children=(task,),
    )
    return Expect(
        "gateway",
        "SERVER",
        "GET /api/work",
        {"http.route": "/api/work", **gone},
        status="ERROR",
        remote_parent=True,
        children=(call,) * tasks,
    )


def test_abandoned_requests_free_their_slots_and_cancel_the_workers_work(
    stack: Stack, collector: Collector
) -> None:
    limit = ABANDONED * TASKS
    pair = stack.start_pair(
        collector,
        suffix="-client-gone",
        gateway_env={"MAX_IN_FLIGHT": str(limit), "WORKER_TIMEOUT": "30"},
    )
    port = pair.ports.gateway
    callers = [new_traceparent() for _ in range(ABANDONED)]
    connections = []
    for traceparent, _, _ in callers:
        connection = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
        connection.sendall(
            f"GET /api/work?tasks={TASKS}&delay_ms={DELAY_MS} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\ntraceparent: {traceparent}\r\n\r\n".encode()
        )
        connections.append(connection)
    with TempoClient(collector.tempo_url) as tempo, httpx.Client(timeout=HANG_GUARD) as client:
        # Each request is at the worker, in its delay: every task's "compute" span has arrived
        # (nothing else in those traces ends before the delay does).
        for _, trace_id, _ in callers:
            computed = tempo.wait_for_trace(trace_id, spans=TASKS, timeout=HANG_GUARD)
            assert [s.name for s in computed] == ["compute"] * TASKS
        # They hold the whole limit.
        refused = client.get(f"{pair.gateway_url}/api/work", params={"tasks": 1})
        assert refused.status_code == 503, refused.text

        for connection in connections:
            connection.close()

        # The gateway cancelled each request, which closed its calls to the worker, which
        # cancelled its tasks in their delay: every trace ends early, as abandoned_trace says.
        expected = abandoned_trace(TASKS)
        for _, trace_id, span_id in callers:
            spans = tempo.wait_for_trace(trace_id, spans=expected.size(), timeout=HANG_GUARD)
            assert match_tree(spans, expected, root_parent=span_id) == []

        # Each SERVER span ended after its request had given its slots back: the very next
        # request, weighing the whole limit, is admitted (it needs nothing else in flight).
        whole = client.get(f"{pair.gateway_url}/api/work", params={"tasks": limit})
        assert whole.status_code == 200, whole.text
        assert len(whole.json()["results"]) == limit

    # The duration metric has the same error.type, on both services.
    wanted = {"gateway": ABANDONED, "worker": ABANDONED * TASKS}
    counted: dict[str, float] = {}
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        samples = prometheus.scrape(collector.metrics_url)
        counted = {
            service: prometheus.total(
                samples,
                REQUEST_DURATION,
                job=f"tandem/{service}",
                error_type=CLIENT_GONE_ERROR_TYPE,
            )
            for service in wanted
        }
        if all(counted[s] >= n for s, n in wanted.items()):
            break
        time.sleep(0.5)  # the next metric export, once a second
    assert all(counted[s] >= n for s, n in wanted.items()), counted
