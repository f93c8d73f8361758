"""Process behaviour: hypercorn worker processes, graceful shutdown on SIGTERM, bad settings."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import httpx
import pytest

from tandem_localstack import Collector, Stack
from tandem_tracecheck import TempoClient
from tandem_tracecheck.scenarios import new_traceparent
from tandem_tracecheck.tree import match_tree, work_trace
from tests.support import free_port

pytestmark = pytest.mark.local_stack


def test_each_worker_process_exports_and_the_parent_exports_nothing(
    stack: Stack, collector: Collector
) -> None:
    worker_port, gateway_port = free_port(), free_port()
    stack.start_service(
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
    pids = set()
    with TempoClient(collector.tempo_url) as tempo:
        for trace_id in trace_ids:
            spans = tempo.wait_for_trace(trace_id, spans=7, timeout=20, settle=0.2)
            assert match_tree(spans, work_trace(1, caller=False)) == []
            pids |= {s.resource["process.pid"] for s in spans if s.service == "gateway"}
    assert gateway.popen.pid not in pids, "hypercorn's parent process exported spans"
    assert 1 <= len(pids) <= 2
    assert gateway.stop() == 0


@pytest.mark.parametrize("service", ["gateway", "worker"])
def test_sigterm_finishes_in_flight_requests_then_flushes(
    stack: Stack, collector: Collector, service: str
) -> None:
    worker_port, gateway_port = free_port(), free_port()
    # Spans wait 60 s in the batch queue: only the shutdown flush can deliver them in time.
    slow_export = {"OTEL_BSP_SCHEDULE_DELAY": "60000"}
    worker = stack.start_service(
        "worker",
        worker_port,
        collector,
        name=f"worker-term-{service}",
        GATEWAY_URL=f"http://127.0.0.1:{gateway_port}",
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
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            httpx.get,
            f"http://127.0.0.1:{gateway_port}/api/work",
            params={"tasks": 2, "delay_ms": 800},
            headers={"traceparent": traceparent},
            timeout=30,
        )
        time.sleep(0.3)  # the request is in flight: the worker is inside its delay
        target.popen.send_signal(signal.SIGTERM)
        response = pending.result()
    assert response.status_code == 200, response.text
    assert target.popen.wait(15) == 0
    other = worker if target is gateway else gateway
    assert other.stop() == 0
    with TempoClient(collector.tempo_url) as tempo:
        spans = tempo.wait_for_trace(trace_id, spans=13, timeout=20)
    assert match_tree(spans, work_trace(2), root_parent=span_id) == []


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        ("gateway", "PORT", "http"),  # tandem_service's server settings
        ("gateway", "WORKER_TIMEOUT", "nan"),  # the gateway's own
        ("worker", "TANDEM_UNTRUSTED_CONTEXT", "maybe"),  # tandem_telemetry's
    ],
)
def test_a_malformed_setting_stops_the_service_with_a_line_naming_it(
    stack: Stack, service: str, variable: str, value: str
) -> None:
    env = {"HOST": "127.0.0.1", "PORT": str(free_port()), variable: value}
    process = stack.start(f"{service}-bad-{variable.lower()}", service, env)
    assert process.popen.wait(30) != 0
    output = process.output()
    assert f"{variable}={value!r}" in output, output
    assert "Traceback" not in output, output
