"""The gateway's two listeners: public routes on PORT, internal ones on INTERNAL_PORT, never both.

A route of one listener is a JSON 404 on the other, whatever the method, and
the worker's quota checks arrive on the internal one.
"""

from __future__ import annotations

import httpx
import pytest

from tandem_localstack import Collector, Pair
from tandem_tracecheck import TempoClient
from tandem_tracecheck.tree import match_tree, work_trace

pytestmark = pytest.mark.local_stack

PUBLIC_ROUTES = ("/api/work?tasks=1", "/healthz", "/readyz")
INTERNAL_ROUTES = ("/internal/quota?task=1",)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_each_listener_serves_only_its_own_routes(pair: Pair, method: str) -> None:
    with httpx.Client(timeout=15) as client:
        for base, served, foreign in (
            (pair.gateway_url, PUBLIC_ROUTES, INTERNAL_ROUTES),
            (pair.gateway_internal_url, INTERNAL_ROUTES, PUBLIC_ROUTES),
        ):
            for route in foreign:
                response = client.request(method, f"{base}{route}")
                assert response.status_code == 404, (base, route, response.text)
                assert response.json()["error"] == "not_found", response.text
                assert response.json()["detail"], response.text
            for route in served:
                response = client.get(f"{base}{route}")
                assert response.status_code == 200, (base, route, response.text)


def test_no_listener_names_its_server_software(pair: Pair) -> None:
    """No `server: hypercorn-h11` banner on any answer, served, refused or shed alike."""
    with httpx.Client(timeout=15) as client:
        for url in (
            f"{pair.gateway_url}/readyz",
            f"{pair.gateway_url}/api/work?tasks=none",
            f"{pair.gateway_internal_url}/internal/quota?task=1",
            f"{pair.worker_url}/readyz",
        ):
            response = client.get(url)
            assert response.status_code in (200, 422), (url, response.text)
            assert "server" not in response.headers, (url, response.headers)


def test_quota_checks_arrive_on_the_internal_port_inside_the_request_trace(
    pair: Pair, collector: Collector
) -> None:
    response = httpx.get(f"{pair.gateway_url}/api/work", params={"tasks": 3}, timeout=30)
    assert response.status_code == 200, response.text
    trace_id = response.json()["trace_id"]
    expected = work_trace(3, caller=False, internal_port=pair.ports.gateway_internal)
    with TempoClient(collector.tempo_url) as tempo:
        spans = tempo.wait_for_trace(trace_id, spans=expected.size(), timeout=20)
    assert match_tree(spans, expected) == []
