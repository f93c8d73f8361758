"""The end-to-end checks, each against a running gateway, a Tempo API and a metrics endpoint."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass

import httpx

from tandem_tracecheck import prometheus
from tandem_tracecheck.spans import Span
from tandem_tracecheck.tempo import TempoClient
from tandem_tracecheck.tree import (
    Expect,
    TreeMatch,
    check_tree,
    render,
    work_trace,
    worker_failure_trace,
)

REQUEST_DURATION = "http_server_request_duration_seconds_count"
# The sampled bit of a traceparent's (and a traceresponse's) flags.
SAMPLED = 0x01
TRACERESPONSE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# How many requests without a traceparent the new-trace check may send to find one the
# gateway samples. Under a ratio sampler p, all of them miss with probability (1 - p)^100:
# 3e-5 at the chart's example 0.1, 0.6% at 0.05, 5% at 0.03. Each is one tasks=1 request
# and, if unsampled, one lookup in Tempo: a few seconds in all. Samplers that keep fewer
# new traces need --new-trace-probes.
NEW_TRACE_PROBES = 100


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
    new_trace_probes: int = NEW_TRACE_PROBES


@dataclass(frozen=True)
class CheckedTrace:
    """The trace a check fetched and matched, and how its cross-process links were checked."""

    trace_id: str
    match: TreeMatch

    def __str__(self) -> str:
        return f"trace {self.trace_id}: {self.match.remote_parents()}"


@dataclass(frozen=True)
class CheckedNewTrace(CheckedTrace):
    """A new trace's check: the sampled trace matched, the probe that found it, and the
    unsampled traces before it, each proven to have no span stored."""

    probes: int
    unsampled: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"{super().__str__()}; sampled at probe {self.probes}, "
            f"{len(self.unsampled)} unsampled traces verified empty"
        )


def new_traceparent() -> tuple[str, str, str]:
    """A sampled caller context: (traceparent, trace id, span id)."""
    trace_id = f"{random.getrandbits(128):032x}"
    span_id = f"{random.getrandbits(64) or 1:016x}"
    return f"00-{trace_id}-{span_id}-{SAMPLED:02x}", trace_id, span_id


def traceresponse_context(response: httpx.Response) -> tuple[str, bool] | None:
    """(trace id, sampled) from the response's traceresponse header; None if missing or bad."""
    match = TRACERESPONSE.match(response.headers.get("traceresponse", ""))
    if match is None:
        return None
    trace_id, _, flags = match.groups()
    return trace_id, bool(int(flags, 16) & SAMPLED)


def _callers_decision_ignored(response: httpx.Response) -> list[str]:
    """A problem if the gateway did not sample a request whose traceparent said sampled.

    Then no span of the trace is stored, and waiting for them would only time out.
    """
    context = traceresponse_context(response)
    if context is None or context[1]:
        return []
    return [
        f"traceresponse {response.headers['traceresponse']!r} says unsampled although the "
        "caller's traceparent said sampled: the sampler is not parent-based "
        "(parentbased_* keeps the caller's decision), so the trace is not stored"
    ]


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
    _fail_if(_callers_decision_ignored(response), f"trace {trace_id} for tasks={tasks}")
    expected = work_trace(tasks, internal_port=target.gateway_internal_port)
    spans = _fetch(target, trace_id, expected)
    match = check_tree(spans, expected, root_parent=span_id, trace_id=trace_id)
    _fail_if(problems + match.problems, f"trace {trace_id} for tasks={tasks}")
    return CheckedTrace(trace_id, match)


def new_trace_without_traceparent(target: Target) -> CheckedNewTrace:
    """Without a traceparent the gateway starts a trace, and its sampler decides whether to keep
    it: a sampled trace is stored whole, an unsampled one not at all.

    Sends requests until the traceresponse says sampled (at most `target.new_trace_probes`),
    matches that trace's tree, then proves each unsampled trace before it empty.
    """
    unsampled: list[str] = []
    # One connection: behind a Kubernetes Service every probe then reaches the same gateway
    # pod, so the unsampled traces and the sampled one pass through the same processes.
    with httpx.Client(base_url=target.gateway_url, timeout=30) as gateway:
        for _ in range(target.new_trace_probes):
            trace_id, sampled = _probe_new_trace(gateway)
            if sampled:
                break
            unsampled.append(trace_id)
        else:
            raise CheckFailed(
                f"new trace: none sampled in {target.new_trace_probes} requests without a "
                "traceparent; a sampler that keeps fewer new traces needs more "
                "(--new-trace-probes), and always_off keeps none"
            )
    expected = work_trace(1, caller=False, internal_port=target.gateway_internal_port)
    spans = _fetch(target, trace_id, expected)
    match = check_tree(spans, expected, root_parent=None, trace_id=trace_id)
    problems = list(match.problems)
    # The sampled trace was sent after the unsampled ones, and its whole tree (even the worker's
    # after-response span) is stored. The same processes export spans in the order they end,
    # so any span of an unsampled trace would be stored by now: none may be.
    with TempoClient(target.tempo_url) as tempo:
        for unsampled_id in unsampled:
            stored = tempo.trace(unsampled_id)
            if stored:
                problems.append(
                    f"unsampled trace {unsampled_id} has {len(stored)} spans stored:\n"
                    f"{render(stored)}"
                )
    probes = len(unsampled) + 1
    _fail_if(problems, f"new trace {trace_id}, sampled at probe {probes}")
    return CheckedNewTrace(trace_id, match, probes, tuple(unsampled))


def _probe_new_trace(gateway: httpx.Client) -> tuple[str, bool]:
    """(trace id, sampled) of one `GET /api/work?tasks=1` without a traceparent."""
    response = gateway.get("/api/work", params={"tasks": 1})
    if response.status_code != 200:
        raise CheckFailed(
            f"new trace: GET /api/work answered {response.status_code}: {response.text}"
        )
    trace_id = response.json().get("trace_id", "")
    context = traceresponse_context(response)
    if context is None or context[0] != trace_id:
        raise CheckFailed(
            f"new trace: traceresponse {response.headers.get('traceresponse', '')!r} does not "
            f"name the body's trace {trace_id!r}"
        )
    return context


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
    _fail_if(_callers_decision_ignored(response), f"failing trace {trace_id}")
    expected = worker_failure_trace()
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

__all__ = ["ALL", "CheckFailed", "CheckedNewTrace", "CheckedTrace", "Target", "render"]
