"""Overload on real processes: a shed request's span and count reach the collector.

The gateway runs with room for one worker task. One slow request takes it; the next is shed.
Which of the two the gateway admits first is its business, so requests are sent until one is
shed (each answered at once either way), never timed.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tandem_localstack import Collector, Stack
from tandem_service import SHED_COUNTER, SHED_ERROR_TYPE
from tandem_tracecheck import TempoClient, prometheus
from tandem_tracecheck.scenarios import new_traceparent
from tandem_tracecheck.tree import Expect, match_tree
from tests.support import free_port

pytestmark = pytest.mark.local_stack

# Prometheus's name for the shed counter, as the collector's exporter spells it.
SHED_METRIC = SHED_COUNTER.replace(".", "_") + "_total"


def test_a_shed_request_is_traced_counted_and_health_and_quota_still_answer(
    stack: Stack, collector: Collector
) -> None:
    gateway_port, worker_port = free_port(), free_port()
    gateway = f"http://127.0.0.1:{gateway_port}"
    stack.start_service(
        "worker", worker_port, collector, name="worker-overload", GATEWAY_URL=gateway
    )
    stack.start_service(
        "gateway",
        gateway_port,
        collector,
        name="gateway-overload",
        WORKER_URL=f"http://127.0.0.1:{worker_port}",
        MAX_IN_FLIGHT="1",
        WORKER_TIMEOUT="30",
    )
    slow_answer: list[httpx.Response] = []
    slow = threading.Thread(
        target=lambda: slow_answer.append(
            httpx.get(f"{gateway}/api/work?tasks=1&delay_ms=5000", timeout=60)
        )
    )
    slow.start()
    with httpx.Client(base_url=gateway, timeout=10) as client:
        shed = None
        for _ in range(200):
            traceparent, trace_id, span_id = new_traceparent()
            response = client.get("/api/work?tasks=1", headers={"traceparent": traceparent})
            if response.status_code == 503:
                shed = response
                break
            assert response.status_code == 200, response.text
        assert shed is not None, "no request was shed while the slow one held the limit"
        # The slow request still holds the limit: health and the quota endpoint answer anyway.
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/internal/quota", params={"task": 7}).status_code == 200
        assert not slow_answer, "the slow request ended before the checks above"
    slow.join(60)
    assert [r.status_code for r in slow_answer] == [200]

    assert shed.headers["retry-after"] == "1"
    assert shed.json()["error"] == "overloaded"
    expected = Expect(
        "gateway",
        "SERVER",
        "GET /api/work",
        {
            "http.response.status_code": 503,
            "error.type": SHED_ERROR_TYPE,
            "http.route": "/api/work",
        },
        status="ERROR",
    )
    with TempoClient(collector.tempo_url) as tempo:
        spans = tempo.wait_for_trace(trace_id, spans=expected.size(), timeout=20)
    assert match_tree(spans, expected, root_parent=span_id) == []

    deadline = time.monotonic() + 20
    counted = 0.0
    while counted < 1 and time.monotonic() < deadline:
        samples = prometheus.scrape(collector.metrics_url)
        counted = prometheus.total(
            samples, SHED_METRIC, job="tandem/gateway", http_route="/api/work"
        )
        if counted < 1:
            time.sleep(0.5)
    assert counted >= 1, f"no {SHED_METRIC} for the gateway's /api/work"
