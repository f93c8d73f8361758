"""The chart's Grafana dashboards against real data: the services → the real Collector running
the chart's configuration → Prometheus 2.42, after traffic that has every kind of answer a
panel shows (OK requests, fail=worker 502s, a 404, admission-limit sheds) and export
failures (a trace store that rejects every other batch). Every metric a panel names exists,
and every panel's every query returns at least one series: a panel with no data is a bug.

Grafana's variables are substituted as a user would pick them (tests/dashboards.py).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tandem_collector.ports import free_ports
from tandem_localstack import (
    Collector,
    OtelcolPorts,
    Pair,
    PairPorts,
    Stack,
    free_collector_ports,
    loopback_url,
)
from tests.dashboards import (
    DASHBOARDS,
    SERVICE_MAP_QUERIES,
    VARIABLES,
    Target,
    Variable,
    metric_names,
    panel_targets,
    substitute,
    traces_to_metrics_queries,
    variables,
)
from tests.k8s.conftest import Rendered
from tests.prometheus import Prometheus, Sample
from tests.support import Relay

OK_REQUESTS = 5
FAILING_REQUESTS = 2
SHED_REQUESTS = 3
# Bounds on the waits (events, not durations): a flush of the connectors (15 s) and a
# scrape, on a machine with both cores busy.
WAIT = 120.0


class RejectingTempo:
    """An OTLP/gRPC trace endpoint standing in for Tempo that refuses the first export with
    INVALID_ARGUMENT, a permanent error (no retry), and accepts the rest: the Collector's
    exporter then counts both failed and sent spans (a counter is not served until it moves)."""

    def __init__(self) -> None:
        (self.port,) = free_ports(1)
        self.exports = itertools.count()
        self.rejected = threading.Event()
        self.accepted = threading.Event()
        outer = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # type: ignore[no-untyped-def]
                if next(outer.exports) == 0:
                    outer.rejected.set()
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "rejected by the test")
                outer.accepted.set()
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")

    def __enter__(self) -> RejectingTempo:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None)


@pytest.fixture(scope="module")
def tempo() -> Iterator[RejectingTempo]:
    with RejectingTempo() as server:
        yield server


@pytest.fixture(scope="module")
def collector(
    stack: Stack,
    otelcol: Path,
    chart_config: Path,
    otelcol_ports: OtelcolPorts,
    tempo: RejectingTempo,
) -> Collector:
    # The store is started only for start_otelcol's signature: traces go to the rejecting Tempo.
    store = stack.start_collector(free_collector_ports(), name="store")
    return stack.start_otelcol(
        otelcol,
        chart_config,
        store,
        otelcol_ports,
        env={"TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{tempo.port}"},
    )


@pytest.fixture(scope="module")
def traffic(stack: Stack, collector: Collector, prom: Prometheus, tempo: RejectingTempo) -> Pair:
    """Sheds first (the gateway admits one worker task at a time; a first request is held at
    the worker's quota call, by events, while the next ones are shed), then OK requests,
    fail=worker requests and a 404."""
    ports = PairPorts.free()
    quota = Relay(loopback_url(ports.gateway_internal), hold=True)
    pair = stack.start_pair(
        collector,
        ports,
        gateway_env={"MAX_IN_FLIGHT": "1", "WORKER_TIMEOUT": "30"},
        worker_env={"GATEWAY_INTERNAL_URL": quota.url},
    )
    with (
        quota,
        futures.ThreadPoolExecutor(1) as pool,
        httpx.Client(base_url=pair.gateway_url, timeout=30) as gateway,
    ):
        held = pool.submit(gateway.get, "/api/work", params={"tasks": 1})
        assert quota.arrived.wait(30), "the first request never reached the quota call"
        for _ in range(SHED_REQUESTS):
            assert gateway.get("/api/work", params={"tasks": 1}).status_code == 503
        quota.release()
        assert held.result().status_code == 200
        # The next spans go in a later export, which is accepted.
        assert tempo.rejected.wait(WAIT), "the Collector exported no spans"
        for _ in range(OK_REQUESTS):
            response = gateway.get("/api/work", params={"tasks": 2})
            assert response.status_code == 200, response.text
        for _ in range(FAILING_REQUESTS):
            response = gateway.get("/api/work", params={"tasks": 1, "fail": "worker"})
            assert response.status_code == 502, response.text
        assert gateway.get("/no-such-route").status_code == 404
    return pair


@pytest.fixture(scope="module")
def settled(prom: Prometheus, traffic: Pair, tempo: RejectingTempo) -> Prometheus:
    """Prometheus once the traffic's telemetry is in: the Collector has had an export
    accepted after the rejected one."""
    assert tempo.accepted.wait(WAIT), "the rejecting Tempo never accepted an export"
    return prom


def has_series(samples: list[Sample]) -> bool:
    return bool(samples)


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda path: path.stem)
def test_every_metric_a_panel_names_is_produced(settled: Prometheus, dashboard: Path) -> None:
    names = set()
    for target in panel_targets(dashboard):
        exprs = SERVICE_MAP_QUERIES if target.target.get("queryType") == "serviceMap" else []
        for expr in [target.expr or "", *exprs]:
            names |= metric_names(expr)
    for variable in variables(dashboard):
        names |= metric_names(variable.selector)
    assert names, f"{dashboard.name} names no metric"
    matcher = "|".join(sorted(names))
    found = settled.wait_until(
        f'count by (__name__) ({{__name__=~"{matcher}"}})',
        lambda samples: len(samples) == len(names),
        timeout=WAIT,
        what=f"the metrics {dashboard.name} names",
    )
    assert {labels["__name__"] for labels, _ in found} == names


VARIABLES_OF = [(path, v) for path in DASHBOARDS for v in variables(path)]


@pytest.mark.parametrize(
    ("dashboard", "variable"), VARIABLES_OF, ids=[f"{p.stem}: ${v.name}" for p, v in VARIABLES_OF]
)
def test_every_variable_offers_the_value_the_queries_are_run_with(
    settled: Prometheus, dashboard: Path, variable: Variable
) -> None:
    expr = f"group by ({variable.label}) ({substitute(variable.selector)})"
    wanted = VARIABLES[variable.name]
    settled.wait_until(
        expr,
        lambda samples: wanted in {labels.get(variable.label) for labels, _ in samples},
        timeout=WAIT,
        what=f"{dashboard.stem}: ${variable.name} offers {wanted}",
    )


TARGETS = [target for path in DASHBOARDS for target in panel_targets(path)]


@pytest.mark.parametrize("target", TARGETS, ids=lambda target: target.id)
def test_every_panel_query_returns_a_series(settled: Prometheus, target: Target) -> None:
    """Each query, as Grafana sends it with the variables picked; the service map's, the
    queries Grafana's Tempo datasource makes of Prometheus to draw it."""
    if target.target.get("queryType") == "serviceMap":
        assert target.datasource["uid"] == "tempo", target
        exprs = SERVICE_MAP_QUERIES
    else:
        assert target.expr, f"{target.id}: no query"
        exprs = [substitute(target.expr)]
    for expr in exprs:
        settled.wait_until(expr, has_series, timeout=WAIT, what=f"{target.id}: {expr}")


def test_traces_to_metrics_queries_return_a_series(
    settled: Prometheus, rendered: dict[str, Rendered]
) -> None:
    """The Tempo datasource's links from a span to its metrics, with the gateway's span."""
    queries = traces_to_metrics_queries(rendered["grafana"])
    assert queries
    for name, query in queries.items():
        expr = query.replace("$__tags", 'service_name="gateway"')
        expr = substitute(expr)
        settled.wait_until(expr, has_series, timeout=WAIT, what=f"tracesToMetrics {name}: {expr}")
