"""Untrusted edge: a gateway with TANDEM_UNTRUSTED_CONTEXT=true, the worker behind it as usual.

An external traceparent must give a new trace whose root links to the
caller's span, its tracestate and baggage must stay outside, and the worker
must never see the caller's baggage. Checked through the Tempo API's raw
OTLP JSON (tandem_tracecheck's Span has no links).

The worker's quota call back into the gateway (`GET /internal/quota`) arrives on
the gateway's internal listener, which keeps the worker's context, so the new
trace stays whole: 1 + 6N spans. On the public port that route does not exist:
an outside caller asking for it gets a 404, consumes no quota, and no span
joins its trace. Trust follows the listener, not the path.
"""

from __future__ import annotations

import httpx

from tandem_localstack import Collector, Stack
from tests.reliability import report
from tests.reliability.test_malformed_input import (
    log_problems,
    raw_trace,
    root_span,
    start_services,
    wait_for_traces,
)

T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"
# The outside caller who asks the public port for the internal route.
PROBE_T = "aaaabbbbccccddddeeeeffff00001111"
PROBE_S = "1111222233334444"
TASKS = 2


def test_untrusted_edge(stack: Stack, collector: Collector) -> None:
    services = start_services(stack, collector, gateway_env={"TANDEM_UNTRUSTED_CONTEXT": "true"})
    rss_before = report.rss_mb(services.gateway.popen.pid) + report.rss_mb(
        services.worker.popen.pid
    )
    problems: list[str] = []
    requests = 0

    with httpx.Client(timeout=15) as client:

        def granted() -> int:
            """The quota counter, read through the internal port (each read takes one)."""
            nonlocal requests
            requests += 1
            response = client.get(f"{services.gateway_internal_url}/internal/quota?task=1")
            assert response.status_code == 200, response.text
            return int(response.json()["granted"])

        before = granted()
        requests += 1
        probe = client.get(
            f"{services.gateway_url}/internal/quota?task=5",
            headers={
                "traceparent": f"00-{PROBE_T}-{PROBE_S}-01",
                "baggage": "user=admin",
            },
        )
        if granted() != before + 1:
            problems.append("/internal/quota on the public port consumed quota")
    assert probe.status_code == 404 and probe.json()["error"] == "not_found", probe.text
    probe_trace = probe.headers["traceresponse"].split("-")[1]
    assert probe_trace != PROBE_T, "the public port continued the outside caller's trace"

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

    # The worker itself trusts its callers: the same baggage sent to it directly is seen (the
    # control).
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
    traces = wait_for_traces(
        collector.tempo_url, {probe_trace: 1, **{trace_id: per_trace for trace_id in trace_ids}}
    )
    # The probe's one span (a 404, linked to the caller) has arrived; nothing of it, or of
    # anything else, is in the caller's own trace.
    probe_spans = traces.pop(probe_trace)
    if [
        (s["service"], s["kind"], s["attributes"].get("http.response.status_code"))
        for s in probe_spans
    ] != [("gateway", "SPAN_KIND_SERVER", 404)]:
        problems.append(f"the probe's trace holds {probe_spans}, expected one gateway 404")
    elif [(link["traceId"], link["spanId"]) for link in probe_spans[0]["links"]] != [
        (PROBE_T, PROBE_S)
    ]:
        problems.append("the probe's span does not link to the outside caller")
    if caller_spans := raw_trace(collector.tempo_url, PROBE_T):
        problems.append(f"spans joined the outside caller's trace: {caller_spans}")
    spans_received = len(probe_spans)
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
        if {s["attributes"].get("server.port") for s in quota} != {services.ports.gateway_internal}:
            problems.append(f"{name}: quota checks did not all arrive on the internal port")
        spans_received += len(spans)
        if len(spans) != per_trace:
            problems.append(f"{name}: {len(spans)} spans in trace {trace_id}, expected {per_trace}")
        if len(quota) != TASKS or any(
            s.get("parentSpanId") not in worker_clients or s["links"] for s in quota
        ):
            problems.append(
                f"{name}: the quota spans must continue the worker's calls (internal listener), "
                "not be linked"
            )
        root = root_span(spans)
        if root.get("parentSpanId"):
            problems.append(
                f"{name}: the root has parent {root['parentSpanId']}; an untrusted caller must "
                "not be a parent"
            )
        links = [(link["traceId"], link["spanId"]) for link in root["links"]]
        if expect_link and links != [(T, S)]:
            problems.append(
                f"{name}: the root's links are {links}, expected one to the caller's span "
                f"({T}, {S})"
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
    note = (
        "the worker's quota calls continue the trace on the internal port; "
        "/internal/quota on the public port: 404, no quota taken, no span in the caller's trace"
    )
    report.record(
        report.Row(
            "untrusted edge",
            f"{requests} requests: external traceparent+tracestate+baggage, baggage only, "
            f"invalid traceparent (tasks={TASKS}); one direct to the worker; /internal/quota on "
            "the public port with an outside traceparent, between two reads of the quota on the "
            "internal port",
            requests,
            len(problems),
            3 * per_trace + 1,
            spans_received,
            rss_mb_before=rss_before,
            rss_mb_after=rss_after,
            notes=note + "; RSS: gateway + worker",
        )
    )
    assert not problems, "\n".join(problems)
