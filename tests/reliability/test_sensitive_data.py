"""Nothing sensitive is recorded: Authorization, Cookie and URL credentials stay out of spans and
logs.

Secrets go in every way a client can send them: headers, userinfo in the URL
(which clients turn into `Authorization: Basic`), an absolute-form request
target that carries the userinfo itself, and the query string. Then every
trace the collector holds (raw OTLP JSON: spans, resources, events, links),
its metrics, and the logs of all three processes are searched for them.
"""

from __future__ import annotations

import base64

import httpx

from tandem_collector.localstack import Collector, Stack
from tests.reliability import report
from tests.reliability.test_malformed_input import (
    http_request,
    log_problems,
    send_raw,
    start_services,
    wait_for_traces,
)

TOKEN = "s3cr3t-token"
COOKIE = "s3cr3t-cookie"
PASSWORD = "s3cr3t-pass"
QUERY = "s3cr3t-query"
PROXY = "s3cr3t-proxy"
BASIC = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
# Every secret, and the encodings in which it could leak.
NEEDLES = (
    "s3cr3t",
    BASIC,
    BASIC.rstrip("="),
    base64.b64encode(TOKEN.encode()).decode().rstrip("="),
)
SECRET_HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "Cookie": f"session={COOKIE}; other={COOKIE}",
    "Proxy-Authorization": f"Basic {PROXY}",
}


def _leaks(where: str, text: str) -> list[str]:
    found = []
    lowered = text.lower()
    for needle in NEEDLES:
        at = lowered.find(needle.lower())
        if at >= 0:
            found.append(f"{needle!r} in {where}: …{text[max(0, at - 120) : at + 40]}…")
    return found


def test_nothing_sensitive_recorded(stack: Stack, collector: Collector) -> None:
    services = start_services(stack, collector)
    port = services.gateway_port
    rss_before = report.rss_mb(services.gateway.popen.pid) + report.rss_mb(
        services.worker.popen.pid
    )
    expected: dict[str, int] = {}  # trace id -> spans
    statuses: list[int] = []

    def answered(status: int, traceresponse: str | None, spans: int) -> None:
        """Note an answer, and the spans its trace (from the `traceresponse` header) must have."""
        statuses.append(status)
        assert traceresponse is not None, "every traced answer carries traceresponse"
        expected[traceresponse.split("-")[1]] = spans

    with httpx.Client(timeout=15) as client:
        # Secret headers and a secret query parameter, on the happy path (1 + 6 × 2 spans) ...
        r = client.get(
            f"{services.gateway_url}/api/work",
            params={"tasks": 2, "token": QUERY},
            headers=SECRET_HEADERS,
        )
        answered(r.status_code, r.headers.get("traceresponse"), 13)
        # ... on the error path: worker 500, gateway 502 (gateway SERVER, CLIENT, worker SERVER) ...
        r = client.get(
            f"{services.gateway_url}/api/work",
            params={"tasks": 1, "fail": "worker", "token": QUERY},
            headers=SECRET_HEADERS,
        )
        answered(r.status_code, r.headers.get("traceresponse"), 3)
        # ... and a bad parameter whose value is the secret (the 422 echoes it to the caller, not to
        # telemetry).
        r = client.get(
            f"{services.gateway_url}/api/work", params={"tasks": QUERY}, headers=SECRET_HEADERS
        )
        answered(r.status_code, r.headers.get("traceresponse"), 1)
        # URL credentials: httpx sends them as Authorization: Basic.
        r = client.get(f"http://user:{PASSWORD}@127.0.0.1:{port}/api/work?tasks=1&token={QUERY}")
        assert r.request.headers["authorization"] == f"Basic {BASIC}"
        answered(r.status_code, r.headers.get("traceresponse"), 7)
        # The worker directly: a valid task (worker SERVER, compute, CLIENT, quota SERVER,
        # publish) and a bad body.
        r = client.post(
            f"{services.worker_url}/tasks?token={QUERY}", json={"task": 3}, headers=SECRET_HEADERS
        )
        answered(r.status_code, r.headers.get("traceresponse"), 5)
        r = client.post(
            f"{services.worker_url}/tasks",
            content=b'{"task": "' + QUERY.encode() + b'"}',
            headers={**SECRET_HEADERS, "Content-Type": "application/json"},
        )
        answered(r.status_code, r.headers.get("traceresponse"), 1)

    # An absolute-form request target carries the userinfo itself, on the wire.
    raw = send_raw(
        port,
        http_request(
            "GET",
            f"http://user:{PASSWORD}@127.0.0.1:{port}/api/work?tasks=1&token={QUERY}",
            list(SECRET_HEADERS.items()),
        ),
    )
    assert raw.status is not None
    answered(raw.status, raw.headers.get("traceresponse"), 7)

    traces = wait_for_traces(collector.tempo_url, expected)
    received = sum(len(spans) for spans in traces.values())
    problems = [
        f"trace {tid}: {len(traces[tid])} spans, expected {n}"
        for tid, n in expected.items()
        if len(traces[tid]) != n
    ]
    if statuses != [200, 502, 422, 200, 200, 422, 200]:
        problems.append(f"statuses {statuses}, expected [200, 502, 422, 200, 200, 422, 200]")
    # The recorded request is still the one that was made: the route, not the URL it came in as.
    paths = {
        span["attributes"].get("url.path")
        for span in traces[str(raw.trace_id)]
        if span["kind"] == "SPAN_KIND_SERVER"
    }
    if paths != {"/api/work", "/tasks", "/internal/quota"}:
        problems.append(f"absolute-form request: url.path of its SERVER spans {paths}")

    rss_after = report.rss_mb(services.gateway.popen.pid) + report.rss_mb(services.worker.popen.pid)
    # Stop the services first, so that every span is flushed and every log line written.
    services.gateway.stop()
    services.worker.stop()
    with httpx.Client(base_url=collector.tempo_url, timeout=10) as tempo:
        # Search answers with Tempo's trace ids, which drop leading zeros.
        listing = [
            entry["traceID"].rjust(32, "0")
            for entry in tempo.get("/api/search", params={"limit": 10000}).json()["traces"]
        ]
        assert set(listing) >= set(expected), (
            f"search lists {listing}, expected at least {sorted(expected)}"
        )
        for trace_id in listing:
            problems += _leaks(f"trace {trace_id}", tempo.get(f"/api/v2/traces/{trace_id}").text)
            problems += _leaks(f"trace {trace_id} (v1)", tempo.get(f"/api/traces/{trace_id}").text)
    problems += _leaks("the collector's metrics", httpx.get(collector.metrics_url, timeout=10).text)
    for process in stack.processes:
        problems += _leaks(f"the {process.name} log", process.output())
    problems += log_problems(services.gateway, services.worker)

    report.record(
        report.Row(
            "nothing sensitive recorded",
            "Authorization, Proxy-Authorization, Cookie, URL userinfo (as Basic auth and in an "
            "absolute-form target) and a query token, on success, error and 422 paths of both "
            "services",
            len(statuses),
            len(problems),
            sum(expected.values()),
            received,
            rss_mb_before=rss_before,
            rss_mb_after=rss_after,
            notes=f"RSS: gateway + worker; searched {len(listing)} traces (v1 and v2 JSON), the "
            f"metrics and {len(stack.processes)} process logs",
        )
    )
    assert not problems, "\n".join(problems)
