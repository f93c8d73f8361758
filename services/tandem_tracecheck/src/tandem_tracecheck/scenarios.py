"""The end-to-end checks, each against a running gateway, a Tempo API and a metrics endpoint."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx

from tandem_tracecheck import prometheus
from tandem_tracecheck.spans import Span
from tandem_tracecheck.tempo import TempoClient
from tandem_tracecheck.tree import Expect, TreeMatch, check_tree, render, work_trace

REQUEST_DURATION = "http_server_request_duration_seconds_count"


class CheckFailed(AssertionError):
    """A check found a difference; the message lists every one."""


@dataclass
class Target:
    """Where the system under test answers."""

    gateway_url: str
    tempo_url: str
    metrics_url: str
    trace_timeout: float = 30.0
    # The gateway's internal port, where the worker's quota checks must arrive; None: unchecked.
    gateway_internal_port: int | None = None


@dataclass(frozen=True)
class CheckedTrace:
    """The trace a check fetched and matched, and how its cross-process links were checked."""

    trace_id: str
    match: TreeMatch

    def __str__(self) -> str:
        return f"trace {self.trace_id}: {self.match.remote_parents()}"


def new_traceparent() -> tuple[str, str, str]:
    """A sampled caller context: (traceparent, trace id, span id)."""
    trace_id = f"{random.getrandbits(128):032x}"
    span_id = f"{random.getrandbits(64) or 1:016x}"
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _fail_if(problems: list[str], what: str) -> None:
    if problems:
        raise CheckFailed(f"{what}:\n- " + "\n- ".join(problems))


def _fetch(target: Target, trace_id: str, expected: Expect) -> list[Span]:
    with TempoClient(target.tempo_url) as tempo:
        return tempo.wait_for_trace(trace_id, spans=expected.size(), timeout=target.trace_timeout)


def linked_tree(target: Target, tasks: int) -> CheckedTrace:
    """A caller's traceparent yields one trace of exactly 1 + 6N spans under the caller's span."""
    traceparent, trace_id, span_id = new_traceparent()
    response = httpx.get(
        f"{target.gateway_url}/api/work",
        params={"tasks": tasks},
        headers={"traceparent": traceparent},
        timeout=30,
    )
    problems = (
        []
        if response.status_code == 200
        else [f"GET /api/work answered {response.status_code}: {response.text}"]
    )
    if response.status_code == 200 and response.json().get("trace_id") != trace_id:
        problems.append(
            f"the body names trace {response.json().get('trace_id')}, not the caller's {trace_id}"
        )
    expected = work_trace(tasks, internal_port=target.gateway_internal_port)
    spans = _fetch(target, trace_id, expected)
    match = check_tree(spans, expected, root_parent=span_id, trace_id=trace_id)
    _fail_if(problems + match.problems, f"trace {trace_id} for tasks={tasks}")
    return CheckedTrace(trace_id, match)


def new_trace_without_traceparent(target: Target) -> CheckedTrace:
    """Without a traceparent the gateway starts a trace; body and traceresponse both name it."""
    response = httpx.get(f"{target.gateway_url}/api/work", params={"tasks": 1}, timeout=30)
    problems = (
        []
        if response.status_code == 200
        else [f"GET /api/work answered {response.status_code}: {response.text}"]
    )
    trace_id = response.json().get("trace_id", "") if response.status_code == 200 else ""
    traceresponse = response.headers.get("traceresponse", "")
    parts = traceresponse.split("-")
    if len(parts) != 4 or parts[1] != trace_id:
        problems.append(
            f"traceresponse {traceresponse!r} does not name the body's trace {trace_id!r}"
        )
    match = TreeMatch()
    if trace_id:
        expected = work_trace(1, caller=False, internal_port=target.gateway_internal_port)
        spans = _fetch(target, trace_id, expected)
        match = check_tree(spans, expected, root_parent=None, trace_id=trace_id)
    _fail_if(problems + match.problems, f"new trace {trace_id}")
    return CheckedTrace(trace_id, match)


def worker_failure_is_an_error_chain(target: Target) -> CheckedTrace:
    """fail=worker gives 502, and the worker's SERVER and the gateway's CLIENT and SERVER spans
    are ERROR."""
    traceparent, trace_id, span_id = new_traceparent()
    response = httpx.get(
        f"{target.gateway_url}/api/work",
        params={"tasks": 1, "fail": "worker"},
        headers={"traceparent": traceparent},
        timeout=30,
    )
    problems = []
    if response.status_code != 502 or response.json().get("error") != "worker_error":
        problems.append(f"expected 502 worker_error, got {response.status_code}: {response.text}")
    task = Expect(
        "worker",
        "SERVER",
        "POST /tasks",
        {"http.response.status_code": 500, "error.type": "500"},
        status="ERROR",
        remote_parent=True,
    )
    call = Expect(
        "gateway",
        "CLIENT",
        "POST",
        {"http.response.status_code": 500, "error.type": "500"},
        status="ERROR",
        children=(task,),
    )
    expected = Expect(
        "gateway",
        "SERVER",
        "GET /api/work",
        {"http.response.status_code": 502, "error.type": "502"},
        status="ERROR",
        remote_parent=True,
        children=(call,),
    )
    spans = _fetch(target, trace_id, expected)
    match = check_tree(spans, expected, root_parent=span_id, trace_id=trace_id)
    _fail_if(problems + match.problems, f"failing trace {trace_id}")
    return CheckedTrace(trace_id, match)


def baggage_reaches_the_worker(target: Target) -> None:
    """Baggage set by the caller arrives at the worker, which echoes what it received."""
    traceparent, _, _ = new_traceparent()
    headers = {
        "traceparent": traceparent,
        "baggage": "tenant=acme,request.origin=tracecheck%20suite",
    }
    response = httpx.get(
        f"{target.gateway_url}/api/work", params={"tasks": 2}, headers=headers, timeout=30
    )
    problems = (
        []
        if response.status_code == 200
        else [f"GET /api/work answered {response.status_code}: {response.text}"]
    )
    for result in response.json().get("results", []) if response.status_code == 200 else []:
        seen = result.get("baggage", {})
        if seen.get("tenant") != "acme" or seen.get("request.origin") != "tracecheck suite":
            problems.append(f"task {result.get('task')} saw baggage {seen}")
    _fail_if(problems, "baggage")


def request_duration_metrics(target: Target, timeout: float = 30.0) -> None:
    """http.server.request.duration arrives for both services, labelled with http.route."""
    wanted = {("gateway", "/api/work"), ("worker", "/tasks"), ("gateway", "/internal/quota")}
    deadline = time.monotonic() + timeout
    missing = wanted
    while missing and time.monotonic() < deadline:
        samples = prometheus.scrape(target.metrics_url)
        missing = {
            (service, route)
            for service, route in wanted
            if prometheus.total(
                samples, REQUEST_DURATION, job=f"tandem/{service}", http_route=route
            )
            <= 0
        }
        if missing:
            time.sleep(0.5)
    _fail_if(
        [f"no {REQUEST_DURATION} for job=tandem/{s} http_route={r}" for s, r in sorted(missing)],
        "metrics",
    )


ALL = (
    ("linked span tree, tasks=1", lambda t: linked_tree(t, 1)),
    ("linked span tree, tasks=3", lambda t: linked_tree(t, 3)),
    ("new trace without traceparent", new_trace_without_traceparent),
    ("worker failure is an error chain", worker_failure_is_an_error_chain),
    ("baggage reaches the worker", baggage_reaches_the_worker),
    ("request duration metrics", request_duration_metrics),
)

__all__ = ["ALL", "CheckFailed", "CheckedTrace", "Target", "render"]
