"""Untrusted edge: a gateway with TANDEM_UNTRUSTED_CONTEXT=true, the worker behind it as usual.

An external traceparent must give a new trace whose root links to the
caller's span, its tracestate and baggage must stay outside, and the worker
must never see the caller's baggage. Checked through the Tempo API's raw
OTLP JSON (tandem_tracecheck's Span has no links).

The worker's quota call back into the gateway (`GET /internal/quota`) is on a
trusted path (TANDEM_TRUSTED_PATHS), so the new trace stays whole: 1 + 6N spans.
"""

from __future__ import annotations

import httpx

from tandem_collector.localstack import Collector, Stack
from tests.reliability import report
from tests.reliability.test_malformed_input import (
    log_problems,
    root_span,
    start_services,
    wait_for_traces,
)

T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"
TASKS = 2


def test_untrusted_edge(stack: Stack, collector: Collector) -> None:
    services = start_services(stack, collector, gateway_env={"TANDEM_UNTRUSTED_CONTEXT": "true"})
    rss_before = report.rss_mb(services.gateway.popen.pid) + report.rss_mb(
        services.worker.popen.pid
    )
    problems: list[str] = []
    requests = 0

    with httpx.Client(base_url=services.gateway_url, timeout=15) as gateway:

        def work(headers: dict[str, str]) -> dict:
            nonlocal requests
            requests += 1
            response = gateway.get("/api/work", params={"tasks": TASKS}, headers=headers)
            assert response.status_code == 200, response.text
            body = response.json()
            assert response.headers["traceresponse"].split("-")[1] == body["trace_id"]
            return body

        external = work(
            {
                "traceparent": f"00-{T}-{S}-01",
                "tracestate": "vendor=abc",
                "baggage": "tenant=acme,user=alice",
            }
        )
        baggage_only = work({"baggage": "tenant=acme"})
        invalid = work({"traceparent": f"00-{T.upper()}-{S}-01", "baggage": "tenant=acme"})

    # The worker itself trusts its callers: the same baggage sent to it directly is seen (control).
    requests += 1
    direct = httpx.post(
        f"{services.worker_url}/tasks",
        json={"task": 7},
        headers={"baggage": "tenant=acme"},
        timeout=15,
    )
    assert direct.status_code == 200 and direct.json()["baggage"] == {"tenant": "acme"}, direct.text

    for name, body in (
        ("external traceparent", external),
        ("baggage only", baggage_only),
        ("invalid traceparent", invalid),
    ):
        if body["trace_id"] == T:
            problems.append(f"{name}: the caller's trace was continued")
        seen = [result["baggage"] for result in body["results"]]
        if seen != [{}] * TASKS:
            problems.append(f"{name}: the worker saw the caller's baggage: {seen}")

    # 1 gateway SERVER + per task: gateway CLIENT, worker SERVER, compute, worker CLIENT, quota
    # SERVER, publish result.
    per_trace = 1 + 6 * TASKS
    trace_ids = [body["trace_id"] for body in (external, baggage_only, invalid)]
    traces = wait_for_traces(collector.tempo_url, {trace_id: per_trace for trace_id in trace_ids})
    spans_received = 0
    for name, trace_id, expect_link in zip(
        ("external traceparent", "baggage only", "invalid traceparent"),
        trace_ids,
        (True, False, False),
        strict=True,
    ):
        spans = traces[trace_id]
        worker_clients = {
            s["spanId"]
            for s in spans
            if s["service"] == "worker" and s["kind"] == "SPAN_KIND_CLIENT"
        }
        quota = [s for s in spans if s["name"] == "GET /internal/quota"]
        spans_received += len(spans)
        if len(spans) != per_trace:
            problems.append(f"{name}: {len(spans)} spans in trace {trace_id}, expected {per_trace}")
        if len(quota) != TASKS or any(
            s.get("parentSpanId") not in worker_clients or s["links"] for s in quota
        ):
            problems.append(
                f"{name}: the quota spans must continue the worker's calls (trusted path), not be "
                "linked"
            )
        root = root_span(spans)
        if root.get("parentSpanId"):
            problems.append(
                f"{name}: the root has parent {root['parentSpanId']}; an untrusted caller must not "
                "be a parent"
            )
        links = [(link["traceId"], link["spanId"]) for link in root["links"]]
        if expect_link and links != [(T, S)]:
            problems.append(
                f"{name}: the root's links are {links}, expected one to the caller's span ({T}, "
                f"{S})"
            )
        if not expect_link and links:
            problems.append(
                f"{name}: the root links to {links}, but there was no valid caller to link to"
            )
        if states := {s["name"] for s in spans if s.get("traceState")}:
            problems.append(f"{name}: the caller's tracestate reached spans {states}")
        # Inside the new trace the tree is whole: each worker SERVER span hangs off a gateway
        # CLIENT span.
        gateway_clients = {
            s["spanId"]
            for s in spans
            if s["service"] == "gateway" and s["kind"] == "SPAN_KIND_CLIENT"
        }
        worker_servers = [
            s for s in spans if s["service"] == "worker" and s["kind"] == "SPAN_KIND_SERVER"
        ]
        if len(worker_servers) != TASKS or any(
            s.get("parentSpanId") not in gateway_clients for s in worker_servers
        ):
            problems.append(
                f"{name}: the worker's SERVER spans do not hang off the gateway's CLIENT spans"
            )

    rss_after = report.rss_mb(services.gateway.popen.pid) + report.rss_mb(services.worker.popen.pid)
    services.gateway.stop()
    services.worker.stop()
    problems += log_problems(services.gateway, services.worker)
    note = "the worker's /internal/quota calls continue the trace (trusted path)"
    report.record(
        report.Row(
            "untrusted edge",
            f"{requests} requests: external traceparent+tracestate+baggage, baggage only, invalid "
            f"traceparent (tasks={TASKS}); one direct to the worker",
            requests,
            len(problems),
            3 * per_trace,
            spans_received,
            rss_mb_before=rss_before,
            rss_mb_after=rss_after,
            notes=note + "; RSS: gateway + worker",
        )
    )
    assert not problems, "\n".join(problems)
