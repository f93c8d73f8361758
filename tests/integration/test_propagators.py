"""OTEL_PROPAGATORS across real processes: a B3 caller joins the trace; `none` propagates nothing.

The worker's calls back to the gateway go through a recording proxy, so the
test sees the headers the worker actually sends.
"""

from __future__ import annotations

import random
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tandem_localstack import Collector, PairPorts, Stack, loopback_url
from tandem_tracecheck import TempoClient
from tandem_tracecheck.tree import match_tree, work_trace
from tests.support import free_port

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


class RecordingProxy:
    """Forwards GETs to `upstream` and keeps the propagation headers of each request it saw."""

    def __init__(self, upstream: str) -> None:
        seen: list[dict[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(
                    {
                        k.lower(): v
                        for k, v in self.headers.items()
                        if k.lower() in PROPAGATION_HEADERS
                    }
                )
                forward = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                try:
                    with urllib.request.urlopen(
                        urllib.request.Request(upstream + self.path, headers=forward), timeout=10
                    ) as answer:
                        status, body, kind = (
                            answer.status,
                            answer.read(),
                            answer.headers.get("content-type", ""),
                        )
                except urllib.error.HTTPError as error:
                    status, body, kind = (
                        error.code,
                        error.read(),
                        error.headers.get("content-type", ""),
                    )
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.seen = seen
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_pair(stack: Stack, collector: Collector, propagators: str) -> tuple[str, RecordingProxy]:
    """A gateway and a worker with OTEL_PROPAGATORS=propagators.

    The worker reaches the gateway's internal port through a proxy.
    """
    ports = PairPorts.free()
    proxy = RecordingProxy(loopback_url(ports.gateway_internal))
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
        expected = work_trace(2)
        with TempoClient(collector.tempo_url) as tempo:
            spans = tempo.wait_for_trace(trace_id, spans=expected.size(), timeout=20)
        assert match_tree(spans, expected, root_parent=span_id) == []
        # The worker's calls back to the gateway carry both header styles, for the same trace.
        assert proxy.seen, "the worker made no call through the proxy"
        for headers in proxy.seen:
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
        assert proxy.seen and all(seen == {} for seen in proxy.seen), proxy.seen
        # Each hop starts its own trace: the gateway's root span has no parent, and no worker
        # span is in its trace.
        with TempoClient(collector.tempo_url) as tempo:
            spans = tempo.wait_for_trace(response.json()["trace_id"], spans=1, timeout=20)
        assert {span.service for span in spans} == {"gateway"}
        assert [span for span in spans if span.parent_span_id is None and span.kind == "SERVER"]
    finally:
        proxy.close()
