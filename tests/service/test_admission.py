"""The admission limit, over real HTTP: what is shed, how, what passes, and what the trace says."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

import httpx
import pytest
from opentelemetry.trace import StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Scope

from tandem_service import (
    HEALTH_ROUTES,
    SHED_COUNTER,
    SHED_ERROR_TYPE,
    AdmissionLimit,
    max_in_flight_from_env,
)
from tandem_telemetry import InvalidEnvVar, TracingMiddleware
from tests.service.helpers import HANG_GUARD, Gate, metric_points
from tests.support import Pipeline, served

pytestmark = pytest.mark.anyio

LIMIT = 3
EXTRA = 4


def weight(scope: Scope) -> int:
    """A request's cost: its `weight` query parameter, else 1."""
    query = dict(parse_qsl(scope["query_string"].decode()))
    return int(query.get("weight", "1"))


def make_app(pipeline: Pipeline, gate: Gate, *, limit: int = LIMIT) -> Starlette:
    """A traced app whose /slow requests wait at `gate`; /internal/ is exempt, as the gateway's."""

    async def slow(request: Request) -> JSONResponse:
        await gate.hold()
        return JSONResponse({"done": True})

    async def internal(request: Request) -> JSONResponse:
        return JSONResponse({"internal": True})

    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError("the handler failed")

    routes = [
        Route("/slow", slow),
        Route("/internal/ping", internal),
        Route("/boom", boom),
        *HEALTH_ROUTES,
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            # The first is the outermost: the admission limit runs inside the span.
            Middleware(TracingMiddleware, telemetry=pipeline.telemetry),
            Middleware(AdmissionLimit, limit=limit, cost=weight, exempt_prefixes=("/internal/",)),
        ],
    )
    app.state.ready = True
    return app


async def saturate(client: httpx.AsyncClient, gate: Gate, count: int) -> list[asyncio.Task]:
    """Start `count` /slow requests and return once every one of them is inside the handler."""
    admitted = [asyncio.create_task(client.get("/slow")) for _ in range(count)]
    await gate.wait_all_in()
    return admitted


async def test_beyond_the_limit_requests_are_shed_at_once_and_the_rest_succeed(
    pipeline: Pipeline,
) -> None:
    gate = Gate(LIMIT)
    async with served(make_app(pipeline, gate)) as base, httpx.AsyncClient(base_url=base) as client:
        admitted = await saturate(client, gate, LIMIT)
        shed = await asyncio.wait_for(
            asyncio.gather(*(client.get("/slow") for _ in range(EXTRA))), HANG_GUARD
        )
        # Answered while every admitted request is still held: not queued behind them.
        assert not gate.release.is_set()
        assert all(not task.done() for task in admitted)
        gate.release.set()
        done = await asyncio.wait_for(asyncio.gather(*admitted), HANG_GUARD)

    assert [r.status_code for r in done] == [200] * LIMIT
    assert [r.status_code for r in shed] == [503] * EXTRA
    for response in shed:
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["error"] == "overloaded"
        assert body["retry_after"] == 1
    # No shed request ever reached the handler.
    assert gate.entered == LIMIT


async def test_a_shed_request_has_its_server_span_with_the_shed_error_type(
    pipeline: Pipeline,
) -> None:
    gate = Gate(LIMIT)
    async with served(make_app(pipeline, gate)) as base, httpx.AsyncClient(base_url=base) as client:
        admitted = await saturate(client, gate, LIMIT)
        shed = await client.get("/slow")
        gate.release.set()
        await asyncio.wait_for(asyncio.gather(*admitted), HANG_GUARD)

    assert shed.status_code == 503
    spans = pipeline.named("GET /slow")
    assert len(spans) == LIMIT + 1
    (span,) = [s for s in spans if s.attributes["http.response.status_code"] == 503]
    assert span.attributes["error.type"] == SHED_ERROR_TYPE
    assert span.attributes["http.route"] == "/slow"
    assert span.status.status_code is StatusCode.ERROR
    # The traceresponse header names the shed request's own span.
    assert f"{span.context.span_id:016x}" in shed.headers["traceresponse"]
    ok = [s for s in spans if s is not span]
    assert all(s.attributes["http.response.status_code"] == 200 for s in ok)
    assert all("error.type" not in s.attributes for s in ok)


async def test_shed_requests_are_counted_per_route(pipeline: Pipeline) -> None:
    gate = Gate(LIMIT)
    async with served(make_app(pipeline, gate)) as base, httpx.AsyncClient(base_url=base) as client:
        admitted = await saturate(client, gate, LIMIT)
        for _ in range(EXTRA):
            assert (await client.get("/slow")).status_code == 503
        assert (await client.get("/missing")).status_code == 503
        gate.release.set()
        await asyncio.wait_for(asyncio.gather(*admitted), HANG_GUARD)

    points = {
        point.attributes.get("http.route"): point.value
        for point in metric_points(pipeline, SHED_COUNTER)
    }
    # A path no route serves is shed too, and counted without a route.
    assert points == {"/slow": EXTRA, None: 1}
    durations = metric_points(pipeline, "http.server.request.duration")
    shed_durations = [p for p in durations if p.attributes.get("error.type") == SHED_ERROR_TYPE]
    assert sum(p.count for p in shed_durations) == EXTRA + 1


async def test_health_and_exempt_paths_pass_while_the_limit_is_reached(
    pipeline: Pipeline,
) -> None:
    gate = Gate(LIMIT)
    async with served(make_app(pipeline, gate)) as base, httpx.AsyncClient(base_url=base) as client:
        admitted = await saturate(client, gate, LIMIT)
        passed = [
            await client.get("/healthz"),
            await client.get("/readyz"),
            await client.get("/internal/ping"),
        ]
        still_shed = await client.get("/slow")
        gate.release.set()
        await asyncio.wait_for(asyncio.gather(*admitted), HANG_GUARD)

    assert [r.status_code for r in passed] == [200, 200, 200]
    assert still_shed.status_code == 503
    # Exempt requests are not counted against the limit, nor as shed.
    points = metric_points(pipeline, SHED_COUNTER)
    assert sum(point.value for point in points) == 1


async def test_a_failed_request_gives_its_place_back(pipeline: Pipeline) -> None:
    gate = Gate(1)
    app = make_app(pipeline, gate, limit=1)
    async with served(app) as base, httpx.AsyncClient(base_url=base) as client:
        for _ in range(3):
            assert (await client.get("/boom")).status_code == 500
        admitted = await saturate(client, gate, 1)
        shed = await client.get("/slow")
        gate.release.set()
        (done,) = await asyncio.wait_for(asyncio.gather(*admitted), HANG_GUARD)
    assert done.status_code == 200
    assert shed.status_code == 503


async def test_requests_weigh_their_cost_against_the_limit(pipeline: Pipeline) -> None:
    """With LIMIT 3 and a request of weight 2 in: one of weight 2 is shed, one of 1 fits."""
    gate = Gate(2)
    async with served(make_app(pipeline, gate)) as base, httpx.AsyncClient(base_url=base) as client:
        heavy = asyncio.create_task(client.get("/slow", params={"weight": 2}))
        await gate.wait_entered(1)
        too_heavy = await client.get("/slow", params={"weight": 2})
        light = asyncio.create_task(client.get("/slow", params={"weight": 1}))
        await gate.wait_all_in()
        full = await client.get("/slow", params={"weight": 1})
        gate.release.set()
        done = await asyncio.wait_for(asyncio.gather(heavy, light), HANG_GUARD)
    assert [r.status_code for r in done] == [200, 200]
    assert too_heavy.status_code == 503
    assert full.status_code == 503


async def test_a_request_heavier_than_the_limit_runs_alone(pipeline: Pipeline) -> None:
    gate = Gate(1)
    async with served(make_app(pipeline, gate)) as base, httpx.AsyncClient(base_url=base) as client:
        huge = asyncio.create_task(client.get("/slow", params={"weight": 10 * LIMIT}))
        await gate.wait_all_in()
        other = await client.get("/slow")
        gate.release.set()
        done = await asyncio.wait_for(huge, HANG_GUARD)
    assert done.status_code == 200
    assert other.status_code == 503


async def test_limit_zero_admits_everything(pipeline: Pipeline) -> None:
    many = LIMIT + EXTRA
    gate = Gate(many)
    async with (
        served(make_app(pipeline, gate, limit=0)) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        admitted = await saturate(client, gate, many)
        gate.release.set()
        done = await asyncio.wait_for(asyncio.gather(*admitted), HANG_GUARD)
    assert [r.status_code for r in done] == [200] * many
    assert metric_points(pipeline, SHED_COUNTER) == []


def test_max_in_flight_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAX_IN_FLIGHT", raising=False)
    assert max_in_flight_from_env(12) == 12
    monkeypatch.setenv("MAX_IN_FLIGHT", "0")
    assert max_in_flight_from_env(12) == 0
    monkeypatch.setenv("MAX_IN_FLIGHT", "-1")
    with pytest.raises(InvalidEnvVar, match="MAX_IN_FLIGHT"):
        max_in_flight_from_env(12)
