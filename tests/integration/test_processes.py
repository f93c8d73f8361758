"""Process behaviour: hypercorn worker processes, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import concurrent.futures
import signal

import httpx
import pytest

from tandem_collector.localstack import Collector, Stack
from tandem_tracecheck import TempoClient
from tandem_tracecheck.scenarios import new_traceparent
from tandem_tracecheck.tree import match_tree, work_trace
from tests.support import Relay, free_port

pytestmark = pytest.mark.local_stack


def test_each_worker_process_exports_and_the_parent_exports_nothing(
    stack: Stack, collector: Collector
) -> None:
    worker_port, gateway_port = free_port(), free_port()
    worker = stack.start_service(
        "worker",
        worker_port,
        collector,
        name="worker-2p",
        GATEWAY_URL=f"http://127.0.0.1:{gateway_port}",
    )
    gateway = stack.start_service(
        "gateway",
        gateway_port,
        collector,
        name="gateway-2p",
        WEB_CONCURRENCY="2",
        WORKER_URL=f"http://127.0.0.1:{worker_port}",
    )
    trace_ids = []
    with httpx.Client(timeout=30) as client:
        for _ in range(12):
            # A new connection each time, so both processes get requests.
            response = client.get(
                f"http://127.0.0.1:{gateway_port}/api/work",
                params={"tasks": 1},
                headers={"connection": "close"},
            )
            assert response.status_code == 200
            trace_ids.append(response.json()["trace_id"])
    # Stopped, every process has flushed: the collector holds all their spans, and no more come.
    assert gateway.stop() == 0
    assert worker.stop() == 0
    pids = set()
    with TempoClient(collector.tempo_url) as tempo:
        for trace_id in trace_ids:
            spans = tempo.trace(trace_id) or []
            assert match_tree(spans, work_trace(1, caller=False)) == []
            pids |= {s.resource["process.pid"] for s in spans if s.service == "gateway"}
    assert gateway.popen.pid not in pids, "hypercorn's parent process exported spans"
    assert 1 <= len(pids) <= 2


@pytest.mark.parametrize("service", ["gateway", "worker"])
def test_sigterm_finishes_in_flight_requests_then_flushes(
    stack: Stack, collector: Collector, service: str
) -> None:
    worker_port, gateway_port = free_port(), free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    # Spans wait 60 s in the batch queue: only the shutdown flush can deliver them in time.
    slow_export = {"OTEL_BSP_SCHEDULE_DELAY": "60000"}
    # The worker's quota calls wait at the relay: the request is then in flight in both services.
    quota = Relay(gateway_url, hold=True)
    worker = stack.start_service(
        "worker",
        worker_port,
        collector,
        name=f"worker-term-{service}",
        GATEWAY_URL=quota.url,
        **slow_export,
    )
    gateway = stack.start_service(
        "gateway",
        gateway_port,
        collector,
        name=f"gateway-term-{service}",
        WORKER_URL=f"http://127.0.0.1:{worker_port}",
        **slow_export,
    )
    target = {"gateway": gateway, "worker": worker}[service]
    traceparent, trace_id, span_id = new_traceparent()
    with quota, concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            httpx.get,
            f"{gateway_url}/api/work",
            params={"tasks": 2},
            headers={"traceparent": traceparent},
            timeout=30,
        )
        assert quota.arrived.wait(30), "the worker never asked for its quota"
        target.popen.send_signal(signal.SIGTERM)
        quota.release()
        response = pending.result()
    assert response.status_code == 200, response.text
    assert target.popen.wait(15) == 0
    other = worker if target is gateway else gateway
    assert other.stop() == 0
    # Both exited: whatever their flushes delivered is in the collector; nothing more will come.
    with TempoClient(collector.tempo_url) as tempo:
        spans = tempo.trace(trace_id) or []
    assert match_tree(spans, work_trace(2), root_parent=span_id) == []
