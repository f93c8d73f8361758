"""OTEL_PROPAGATORS across real processes: a B3 caller joins the trace; `none` propagates nothing.

The worker's calls back to the gateway go through a relay that records them,
so the test sees the headers the worker actually sends.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import httpx
import pytest

from tandem_localstack import Collector, PairPorts, Stack, loopback_url
from tandem_tracecheck import TempoClient
from tandem_tracecheck.tree import match_tree, work_trace
from tests.support import Relay

pytestmark = pytest.mark.local_stack

PROPAGATION_HEADERS = (
    "traceparent",
    "tracestate",
    "baggage",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "b3",
)


def propagation_headers(proxy: Relay) -> list[dict[str, str]]:
    """The propagation headers of each call the worker made through the relay."""
    return [{k: v for k, v in h.items() if k in PROPAGATION_HEADERS} for h in proxy.seen]


def start_pair(stack: Stack, collector: Collector, propagators: str) -> tuple[str, Relay]:
    """A gateway and a worker with OTEL_PROPAGATORS=propagators.

    The worker reaches the gateway's internal port through a proxy.
    """
    ports = PairPorts.free()
    proxy = Relay(loopback_url(ports.gateway_internal))
    env = {"OTEL_PROPAGATORS": propagators}
    pair = stack.start_pair(
        collector,
        ports,
        suffix=f"-{propagators}",
        gateway_env=env,
        worker_env={**env, "GATEWAY_INTERNAL_URL": proxy.url},
    )
    return pair.gateway_url, proxy


@pytest.fixture
def pair_stack(tmp_path) -> Iterator[Stack]:
    stack = Stack(tmp_path)
    yield stack
    stack.stop_all()


def test_a_b3_caller_continues_through_gateway_worker_and_back(
    pair_stack: Stack, collector: Collector
) -> None:
    gateway_url, proxy = start_pair(pair_stack, collector, "tracecontext,baggage,b3multi")
    try:
        trace_id, span_id = (
            f"{random.getrandbits(128) or 1:032x}",
            f"{random.getrandbits(64) or 1:016x}",
        )
        b3 = {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id, "X-B3-Sampled": "1"}
        response = httpx.get(f"{gateway_url}/api/work", params={"tasks": 2}, headers=b3, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["trace_id"] == trace_id, (
            "the gateway did not continue the B3 caller's trace"
        )
        # Stopped, both services have flushed: the collector holds every span they made.
        pair_stack.stop_all()
        with TempoClient(collector.tempo_url) as tempo:
            spans = tempo.trace(trace_id)
        assert match_tree(spans, work_trace(2), root_parent=span_id) == []
        # The worker's calls back to the gateway carry both header styles, for the same trace.
        assert proxy.seen, "the worker made no call through the proxy"
        for headers in propagation_headers(proxy):
            assert headers["traceparent"].split("-")[1] == trace_id, headers
            assert headers["x-b3-traceid"] == trace_id and headers["x-b3-sampled"] == "1", headers
    finally:
        proxy.close()


def test_none_starts_every_request_afresh_and_injects_nothing(
    pair_stack: Stack, collector: Collector
) -> None:
    gateway_url, proxy = start_pair(pair_stack, collector, "none")
    try:
        caller = f"{random.getrandbits(128) or 1:032x}"
        headers = {
            "traceparent": f"00-{caller}-{random.getrandbits(64) or 1:016x}-01",
            "baggage": "tenant=acme",
        }
        response = httpx.get(
            f"{gateway_url}/api/work", params={"tasks": 2}, headers=headers, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.json()["trace_id"] != caller
        assert proxy.seen and all(seen == {} for seen in propagation_headers(proxy)), proxy.seen
        # Each hop starts its own trace: the gateway's root span has no parent, and no worker
        # span is in its trace.
        pair_stack.stop_all()
        with TempoClient(collector.tempo_url) as tempo:
            spans = tempo.trace(response.json()["trace_id"])
        assert {span.service for span in spans} == {"gateway"}
        assert [span for span in spans if span.parent_span_id is None and span.kind == "SERVER"]
    finally:
        proxy.close()
