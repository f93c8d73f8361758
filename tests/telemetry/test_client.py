"""The traced client: CLIENT spans per attempt, injection, fan-out parentage, retries, timeouts."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from opentelemetry import baggage, context
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from tandem_telemetry import RetryPolicy, Timeouts, TotalTimeout, TracingMiddleware, create_client
from tests.support import Pipeline, refused_port, served

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.002)


def echo_app(pipeline: Pipeline) -> Starlette:
    """A downstream service that echoes the propagation headers it received."""

    async def echo(request: Request) -> JSONResponse:
        seen: dict[str, object] = {
            key: request.headers.get(key) for key in ("traceparent", "tracestate", "baggage")
        }
        seen["baggage_entries"] = dict(baggage.get_all())  # what the middleware extracted
        return JSONResponse(seen)

    return Starlette(
        routes=[Route("/echo", echo, methods=["GET", "POST"])],
        middleware=[Middleware(TracingMiddleware, telemetry=pipeline.telemetry)],
    )


async def test_client_span_attributes_and_injection(pipeline: Pipeline) -> None:
    tracer = pipeline.telemetry.tracer
    # httpx's own transport here: aiohttp refuses URL credentials beside the Authorization header
    # httpx derives from them.
    transport = httpx.AsyncHTTPTransport()
    async with (
        served(echo_app(pipeline)) as base,
        create_client(telemetry=pipeline.telemetry, transport=transport) as client,
    ):
        with tracer.start_as_current_span("caller"):
            response = await client.get(
                f"http://user:pw@{base.removeprefix('http://')}/echo?q=secret"
            )
    sent = response.json()
    (client_span,) = pipeline.named("GET")
    port = int(base.rsplit(":", 1)[1])
    assert client_span.kind is SpanKind.CLIENT
    assert dict(client_span.attributes) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": port,
        "url.full": f"http://127.0.0.1:{port}/echo",
        "http.response.status_code": 200,
    }
    ctx = client_span.context
    assert sent["traceparent"] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    (server_span,) = pipeline.named("GET /echo")
    assert server_span.parent.span_id == ctx.span_id
    assert server_span.parent.is_remote


async def test_fan_out_keeps_each_child_under_its_parent(pipeline: Pipeline) -> None:
    tracer = pipeline.telemetry.tracer
    async with (
        served(echo_app(pipeline)) as base,
        create_client(base, telemetry=pipeline.telemetry) as client,
    ):
        with tracer.start_as_current_span("fan-out") as root:
            responses = await asyncio.gather(*(client.post("/echo") for _ in range(5)))
    assert all(r.status_code == 200 for r in responses)
    client_spans = pipeline.named("POST")
    server_spans = pipeline.named("POST /echo")
    assert len(client_spans) == len(server_spans) == 5
    assert {s.parent.span_id for s in client_spans} == {root.get_span_context().span_id}
    assert {s.parent.span_id for s in server_spans} == {s.context.span_id for s in client_spans}
    assert {s.context.trace_id for s in client_spans + server_spans} == {
        root.get_span_context().trace_id
    }


async def test_baggage_and_tracestate_are_propagated(pipeline: Pipeline) -> None:
    async with (
        served(echo_app(pipeline)) as base,
        create_client(base, telemetry=pipeline.telemetry) as client,
    ):
        token = context.attach(
            baggage.set_baggage("tenant", "acme corp", baggage.set_baggage("plan", "gold"))
        )
        try:
            sent = (await client.get("/echo")).json()
        finally:
            context.detach(token)
    assert sent["baggage_entries"] == {"plan": "gold", "tenant": "acme corp"}


async def test_connect_failures_retry_even_a_post_with_one_span_per_attempt(
    pipeline: Pipeline,
) -> None:
    with refused_port() as port:
        closed = f"http://127.0.0.1:{port}"
        async with create_client(closed, retry=FAST_RETRY, telemetry=pipeline.telemetry) as client:
            with (
                pipeline.telemetry.tracer.start_as_current_span("caller") as caller,
                pytest.raises(httpx.ConnectError),
            ):
                await client.post("/tasks", json={"task": 1})
    attempts = pipeline.named("POST")
    assert len(attempts) == 3
    assert [s.attributes.get("http.request.resend_count") for s in attempts] == [None, 1, 2]
    assert {s.parent.span_id for s in attempts} == {caller.get_span_context().span_id}
    for span in attempts:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "ConnectError"
        assert "http.response.status_code" not in span.attributes


async def test_idempotent_requests_retry_on_503_and_post_does_not(pipeline: Pipeline) -> None:
    calls = {"n": 0}

    async def flaky(request: Request) -> PlainTextResponse:
        calls["n"] += 1
        return PlainTextResponse(
            "busy" if calls["n"] < 3 else "ok", status_code=503 if calls["n"] < 3 else 200
        )

    app = Starlette(routes=[Route("/flaky", flaky, methods=["GET", "POST"])])
    async with (
        served(app) as base,
        create_client(base, retry=FAST_RETRY, telemetry=pipeline.telemetry) as client,
    ):
        got = await client.get("/flaky")
        calls["n"] = 0
        posted = await client.post("/flaky")
    assert got.status_code == 200
    assert posted.status_code == 503
    gets = pipeline.named("GET")
    assert [s.attributes.get("http.response.status_code") for s in gets] == [503, 503, 200]
    assert [s.attributes.get("http.request.resend_count") for s in gets] == [None, 1, 2]
    assert [s.status.status_code for s in gets] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    (post,) = pipeline.named("POST")
    assert post.attributes["error.type"] == "503"


async def test_a_503_with_retry_after_is_not_retried(pipeline: Pipeline) -> None:
    """A server shedding load says when to come back; the client passes that on, at once."""
    calls = {"n": 0}

    async def shedding(request: Request) -> PlainTextResponse:
        calls["n"] += 1
        return PlainTextResponse("overloaded", status_code=503, headers={"retry-after": "1"})

    app = Starlette(routes=[Route("/shedding", shedding)])
    async with (
        served(app) as base,
        create_client(base, retry=FAST_RETRY, telemetry=pipeline.telemetry) as client,
    ):
        response = await client.get("/shedding")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert calls["n"] == 1
    (span,) = pipeline.named("GET")
    assert span.attributes["http.response.status_code"] == 503
    assert "http.request.resend_count" not in span.attributes


async def test_4xx_marks_a_client_span_as_error(pipeline: Pipeline) -> None:
    app = Starlette(routes=[])
    async with served(app) as base, create_client(base, telemetry=pipeline.telemetry) as client:
        response = await client.get("/missing")
    assert response.status_code == 404
    (span,) = pipeline.named("GET")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "404"


async def test_total_timeout_bounds_a_slow_server(pipeline: Pipeline) -> None:
    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(5)
        return PlainTextResponse("late")

    app = Starlette(routes=[Route("/slow", slow)])
    timeouts = Timeouts(connect=1, read=10, total=0.2)
    async with (
        served(app) as base,
        create_client(
            base, timeouts=timeouts, retry=RetryPolicy(attempts=1), telemetry=pipeline.telemetry
        ) as client,
    ):
        with pytest.raises(TotalTimeout):
            await client.get("/slow")
    (span,) = pipeline.named("GET")
    assert span.attributes["error.type"] == "TotalTimeout"


async def test_client_duration_metric(pipeline: Pipeline) -> None:
    async with (
        served(echo_app(pipeline)) as base,
        create_client(base, telemetry=pipeline.telemetry) as client,
    ):
        await client.get("/echo")
    data = pipeline.metrics.get_metrics_data()
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    (point,) = metrics["http.client.request.duration"].data.data_points
    assert point.count == 1
    assert point.attributes["http.response.status_code"] == 200
