"""RED metrics, proven against real Prometheus: the services → the real Collector running the
chart's configuration (span_metrics and service_graph connectors) → its Prometheus endpoint
→ Prometheus 2.42 with exemplar storage. Counts are exact, and exemplars lead to traces
whose tree tracecheck accepts."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from tandem_localstack import Collector, Pair
from tandem_tracecheck.tempo import TempoClient
from tandem_tracecheck.tree import check_tree, work_trace
from tests.prometheus import (
    COLLECTOR_METRICS_JOB,
    COLLECTOR_TELEMETRY_JOB,
    Prometheus,
)

# The traffic: OK requests of TASKS tasks each, and requests with fail=worker (1 task: the
# worker answers 500, the gateway 502).
OK_REQUESTS = 7
TASKS = 2
FAILING_REQUESTS = 3
# Long enough for a flush of the connectors (15 s) and a scrape, on a busy machine.
WAIT = 90.0


@dataclass(frozen=True)
class Traffic:
    ok_trace_ids: frozenset[str]
    failing_trace_ids: frozenset[str]


@pytest.fixture(scope="module")
def traffic(pair: Pair, prom: Prometheus) -> Traffic:
    """The module's only requests: every count below is of these."""
    ok, failing = set(), set()
    with httpx.Client(base_url=pair.gateway_url, timeout=30) as gateway:
        for _ in range(OK_REQUESTS):
            response = gateway.get("/api/work", params={"tasks": TASKS})
            assert response.status_code == 200, response.text
            ok.add(response.json()["trace_id"])
        for _ in range(FAILING_REQUESTS):
            response = gateway.get("/api/work", params={"tasks": 1, "fail": "worker"})
            assert response.status_code == 502, response.text
            failing.add(response.json()["trace_id"])
    return Traffic(frozenset(ok), frozenset(failing))


# (service, span kind, span name, http.route or None): (calls, errors), for the traffic above.
WORKER_TASKS = OK_REQUESTS * TASKS + FAILING_REQUESTS
EXPECTED_SPAN_CALLS = {
    ("gateway", "SERVER", "GET /api/work", "/api/work"): (
        OK_REQUESTS + FAILING_REQUESTS,
        FAILING_REQUESTS,
    ),
    ("gateway", "CLIENT", "POST", None): (WORKER_TASKS, FAILING_REQUESTS),
    ("worker", "SERVER", "POST /tasks", "/tasks"): (WORKER_TASKS, FAILING_REQUESTS),
    # A failing task answers 500 before its quota call.
    ("worker", "CLIENT", "GET", None): (OK_REQUESTS * TASKS, 0),
    ("gateway", "SERVER", "GET /internal/quota", "/internal/quota"): (OK_REQUESTS * TASKS, 0),
    ("worker", "INTERNAL", "compute", None): (OK_REQUESTS * TASKS, 0),
}


def span_selector(service: str, kind: str, name: str, route: str | None) -> str:
    labels = [
        f'service_name="{service}"',
        f'span_kind="SPAN_KIND_{kind}"',
        f'span_name="{name}"',
        f'job="tandem/{service}"',
    ]
    if route is not None:
        labels.append(f'http_route="{route}"')
    return ",".join(labels)


@pytest.mark.parametrize(("service", "kind", "name", "route"), list(EXPECTED_SPAN_CALLS))
def test_span_metrics_count_every_call_and_error_exactly(
    prom: Prometheus, traffic: Traffic, service: str, kind: str, name: str, route: str | None
) -> None:
    calls, errors = EXPECTED_SPAN_CALLS[(service, kind, name, route)]
    selector = span_selector(service, kind, name, route)
    prom.wait_for_value(f"sum(traces_span_metrics_calls_total{{{selector}}})", calls, timeout=WAIT)
    error_calls = f'traces_span_metrics_calls_total{{{selector},status_code="STATUS_CODE_ERROR"}}'
    if errors:
        prom.wait_for_value(f"sum({error_calls})", errors, timeout=WAIT)
    else:
        assert prom.query(error_calls) == []
    # The duration histogram counts the same spans.
    prom.wait_for_value(
        f"sum(traces_span_metrics_duration_seconds_count{{{selector}}})", calls, timeout=WAIT
    )


# The services' own histograms: (job, http.route) -> (requests, 5xx answers).
EXPECTED_SERVER_REQUESTS = {
    ("tandem/gateway", "/api/work"): (OK_REQUESTS + FAILING_REQUESTS, FAILING_REQUESTS),
    ("tandem/worker", "/tasks"): (WORKER_TASKS, FAILING_REQUESTS),
    ("tandem/gateway", "/internal/quota"): (OK_REQUESTS * TASKS, 0),
}


@pytest.mark.parametrize(("job", "route"), list(EXPECTED_SERVER_REQUESTS))
def test_the_services_request_durations_count_the_same_requests(
    prom: Prometheus, traffic: Traffic, job: str, route: str
) -> None:
    requests, failed = EXPECTED_SERVER_REQUESTS[(job, route)]
    selector = f'job="{job}",http_route="{route}"'
    prom.wait_for_value(
        f"sum(http_server_request_duration_seconds_count{{{selector}}})", requests, timeout=WAIT
    )
    answered_5xx = f'{selector},http_response_status_code=~"5.."'
    failed_requests = f"http_server_request_duration_seconds_count{{{answered_5xx}}}"
    if failed:
        prom.wait_for_value(f"sum({failed_requests})", failed, timeout=WAIT)
    else:
        assert prom.query(failed_requests) == []


# (client, server): (requests, failed). "user": the gateway's callers, who send no span.
EXPECTED_EDGES = {
    ("user", "gateway"): (OK_REQUESTS + FAILING_REQUESTS, FAILING_REQUESTS),
    ("gateway", "worker"): (WORKER_TASKS, FAILING_REQUESTS),
    ("worker", "gateway"): (OK_REQUESTS * TASKS, 0),
}


@pytest.mark.parametrize(("client", "server"), list(EXPECTED_EDGES))
def test_the_service_graph_counts_every_call_between_services(
    prom: Prometheus, traffic: Traffic, client: str, server: str
) -> None:
    requests, failed = EXPECTED_EDGES[(client, server)]
    selector = f'client="{client}",server="{server}",job="{COLLECTOR_METRICS_JOB}"'
    prom.wait_for_value(
        f"sum(traces_service_graph_request_total{{{selector}}})", requests, timeout=WAIT
    )
    if failed:
        prom.wait_for_value(
            f"sum(traces_service_graph_request_failed_total{{{selector}}})", failed, timeout=WAIT
        )
    else:
        assert prom.query(f"traces_service_graph_request_failed_total{{{selector}}}") == []


def test_no_span_was_lost_and_the_collector_is_scraped(prom: Prometheus, traffic: Traffic) -> None:
    """Tandem's span-loss counters, per service and reason, are there and zero; the
    Collector's own telemetry is scraped on its port."""
    lost = prom.wait_until(
        "tandem_telemetry_spans_lost_total",
        lambda samples: len(samples) == 4,
        timeout=WAIT,
        what="tandem_telemetry_spans_lost_total for 2 services x 2 reasons",
    )
    assert {(labels["job"], labels["reason"]) for labels, _ in lost} == {
        (job, reason)
        for job in ("tandem/gateway", "tandem/worker")
        for reason in ("export_failed", "queue_full")
    }
    assert [value for _, value in lost] == [0.0] * 4
    accepted = prom.wait_until(
        f'sum(otelcol_receiver_accepted_spans{{job="{COLLECTOR_TELEMETRY_JOB}"}})',
        lambda samples: bool(samples) and samples[0][1] > 0,
        timeout=WAIT,
    )
    assert accepted[0][1] > 0


@pytest.mark.parametrize(
    "series",
    [
        'traces_span_metrics_duration_seconds_bucket{service_name="gateway",'
        'span_name="GET /api/work",status_code="STATUS_CODE_UNSET"}',
        'http_server_request_duration_seconds_bucket{job="tandem/gateway",'
        'http_route="/api/work",http_response_status_code="200"}',
    ],
    ids=["span metrics", "http.server.request.duration"],
)
def test_exemplars_lead_to_the_whole_trace(
    prom: Prometheus, store: Collector, pair: Pair, traffic: Traffic, series: str
) -> None:
    """An exemplar's trace_id, from Prometheus's exemplar API, is a trace of the traffic, and
    the trace store has its whole tree."""
    exemplars = prom.wait_for_exemplars(series, timeout=WAIT)
    trace_ids = {exemplar["labels"]["trace_id"] for exemplar in exemplars}
    assert trace_ids <= traffic.ok_trace_ids, trace_ids - traffic.ok_trace_ids
    expected = work_trace(TASKS, caller=False, internal_port=pair.ports.gateway_internal)
    trace_id = sorted(trace_ids)[0]
    with TempoClient(store.tempo_url) as tempo:
        spans = tempo.wait_for_trace(trace_id, spans=expected.size(), timeout=30)
    match = check_tree(spans, expected, root_parent=None, trace_id=trace_id)
    assert match.problems == [], match.problems
