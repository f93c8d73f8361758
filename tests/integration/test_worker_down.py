"""With the worker down, the gateway answers 503; its retries show as sibling CLIENT spans."""

from __future__ import annotations

import httpx
import pytest

from tandem_localstack import Collector, Stack
from tandem_tracecheck import TempoClient
from tandem_tracecheck.scenarios import new_traceparent
from tandem_tracecheck.tree import Expect, match_tree
from tests.support import free_port

pytestmark = pytest.mark.local_stack


def test_unreachable_worker_gives_503_with_one_span_per_attempt(
    stack: Stack, collector: Collector
) -> None:
    gateway_port = free_port()
    gateway = stack.start_service(
        "gateway",
        gateway_port,
        collector,
        name="gateway-alone",
        INTERNAL_PORT=str(free_port()),
        WORKER_URL=f"http://127.0.0.1:{free_port()}",
    )
    traceparent, trace_id, span_id = new_traceparent()
    response = httpx.get(
        f"http://127.0.0.1:{gateway_port}/api/work",
        params={"tasks": 1},
        headers={"traceparent": traceparent},
        timeout=30,
    )
    assert response.status_code == 503
    assert response.json()["error"] == "worker_unavailable"

    attempt = Expect("gateway", "CLIENT", "POST", {"error.type": "ConnectError"}, status="ERROR")
    expected = Expect(
        "gateway",
        "SERVER",
        "GET /api/work",
        {"http.response.status_code": 503, "error.type": "503"},
        status="ERROR",
        children=(attempt,) * 3,
    )
    # Stopped, the gateway has flushed: the collector holds all its spans, and no more come.
    assert gateway.stop() == 0
    with TempoClient(collector.tempo_url) as tempo:
        spans = tempo.trace(trace_id)
    assert match_tree(spans, expected, root_parent=span_id) == []
    attempts = sorted((s for s in spans if s.kind == "CLIENT"), key=lambda s: s.start_ns)
    # Connection refused means nothing was sent, so even this POST was retried.
    assert [s.attributes.get("http.request.resend_count") for s in attempts] == [None, 1, 2]
    assert all("http.response.status_code" not in s.attributes for s in attempts)
