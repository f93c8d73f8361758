"""Overload on real processes: a shed request's span and count reach the collector.

The gateway runs with room for one worker task. A first request takes it and is held, by
events, where the worker asks the gateway for quota (a relay on the internal port); the next
request is then shed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tandem_localstack import Collector, PairPorts, Stack, loopback_url
from tandem_service import SHED_COUNTER, SHED_ERROR_TYPE
from tandem_tracecheck import TempoClient, prometheus
from tandem_tracecheck.scenarios import new_traceparent
from tandem_tracecheck.tree import Expect, match_tree
from tests.support import Relay

pytestmark = pytest.mark.local_stack

# Prometheus's name for the shed counter, as the collector's exporter spells it.
SHED_METRIC = SHED_COUNTER.replace(".", "_") + "_total"


def test_a_shed_request_is_traced_counted_and_health_and_quota_still_answer(
    stack: Stack, collector: Collector
) -> None:
    ports = PairPorts.free()
    internal = loopback_url(ports.gateway_internal)
    # The admitted request's quota call waits here: it holds the limit until released.
    quota_relay = Relay(internal, hold=True)
    pair = stack.start_pair(
        collector,
        ports,
        suffix="-overload",
        gateway_env={"MAX_IN_FLIGHT": "1", "WORKER_TIMEOUT": "30"},
        worker_env={"GATEWAY_INTERNAL_URL": quota_relay.url},
    )
    gateway = pair.gateway_url
    with (
        quota_relay,
        ThreadPoolExecutor(1) as pool,
        httpx.Client(base_url=gateway, timeout=10) as client,
    ):
        admitted = pool.submit(httpx.get, f"{gateway}/api/work?tasks=1", timeout=60)
        assert quota_relay.arrived.wait(30), (
            "the first request never reached the worker's quota call"
        )
        traceparent, trace_id, span_id = new_traceparent()
        shed = client.get("/api/work?tasks=1", headers={"traceparent": traceparent})
        assert shed.status_code == 503, shed.text
        # The admitted request still holds the limit: health and the quota endpoint answer anyway.
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").status_code == 200
        quota = httpx.get(f"{internal}/internal/quota", params={"task": 7}, timeout=10)
        assert quota.status_code == 200
        assert not admitted.done(), "the admitted request ended before the checks above"
        quota_relay.release()
        assert admitted.result().status_code == 200

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
