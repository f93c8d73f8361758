"""The server middleware, over real HTTP: names, attributes, status rules, propagation, metrics."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from tandem_telemetry import ERROR_TYPE_KEY, TracingMiddleware
from tests.support import Pipeline, make_pipeline, served

pytestmark = pytest.mark.anyio

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["item_id"]})


async def status(request: Request) -> PlainTextResponse:
    return PlainTextResponse("", status_code=int(request.path_params["code"]))


async def boom(request: Request) -> None:
    raise RuntimeError("kaboom")


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def make_app(pipeline: Pipeline) -> Starlette:
    routes = [
        Route("/items/{item_id}", item),
        Route("/status/{code:int}", status),
        Route("/boom", boom),
        Route("/healthz", health),
    ]
    return Starlette(
        routes=routes, middleware=[Middleware(TracingMiddleware, telemetry=pipeline.telemetry)]
    )


async def test_span_name_and_stable_semconv_attributes(pipeline: Pipeline) -> None:
    async with served(make_app(pipeline)) as base, httpx.AsyncClient() as client:
        response = await client.get(
            f"{base}/items/42?token=secret", headers={"user-agent": "probe/1.0"}
        )
    assert response.status_code == 200
    (span,) = pipeline.finished()
    assert span.name == "GET /items/{item_id}"
    assert span.kind is SpanKind.SERVER
    port = int(base.rsplit(":", 1)[1])
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "url.path": "/items/42",
        "url.scheme": "http",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
        "server.address": "127.0.0.1",
        "server.port": port,
        "client.address": "127.0.0.1",
        "network.protocol.version": "1.1",
        "user_agent.original": "probe/1.0",
    }
    assert all("secret" not in str(value) for value in span.attributes.values())
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None


async def test_traceresponse_names_the_server_span(pipeline: Pipeline) -> None:
    async with served(make_app(pipeline)) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/items/1")
    (span,) = pipeline.finished()
    context = span.get_span_context()
    assert (
        response.headers["traceresponse"]
        == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )


async def test_unmatched_route_is_named_by_method_alone(pipeline: Pipeline) -> None:
    async with served(make_app(pipeline)) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/nowhere")
    assert response.status_code == 404
    (span,) = pipeline.finished()
    assert span.name == "GET"
    assert "http.route" not in span.attributes
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(
    ("code", "error"), [(400, False), (404, False), (499, False), (500, True), (503, True)]
)
async def test_only_5xx_marks_a_server_span_as_error(
    pipeline: Pipeline, code: int, error: bool
) -> None:
    async with served(make_app(pipeline)) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/status/{code}")
    assert response.status_code == code
    (span,) = pipeline.finished()
    assert span.attributes["http.response.status_code"] == code
    assert (span.status.status_code is StatusCode.ERROR) is error
    assert span.attributes.get("error.type") == (str(code) if error else None)


async def test_unhandled_exception_is_recorded(pipeline: Pipeline) -> None:
    async with served(make_app(pipeline)) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/boom")
    assert response.status_code == 500
    (span,) = pipeline.finished()
    assert span.name == "GET /boom"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "RuntimeError"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "RuntimeError"
    assert event.attributes["exception.message"] == "kaboom"


async def test_continues_the_callers_trace(pipeline: Pipeline) -> None:
    headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc,other=1"}
    async with served(make_app(pipeline)) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/items/1", headers=headers)
    (span,) = pipeline.finished()
    assert f"{span.context.trace_id:032x}" == CALLER_TRACE
    assert f"{span.parent.span_id:016x}" == CALLER_SPAN
    assert span.parent.is_remote
    assert span.context.trace_state.to_header() == "vendor=abc,other=1"
    assert response.headers["traceresponse"].split("-")[1] == CALLER_TRACE


async def test_health_paths_are_not_traced(pipeline: Pipeline) -> None:
    async with served(make_app(pipeline)) as base, httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/healthz")).status_code == 200
        assert "traceresponse" not in (await client.get(f"{base}/healthz")).headers
    assert pipeline.finished() == []


async def test_untraced_paths_are_configurable() -> None:
    pipeline = make_pipeline(untraced_paths=frozenset({"/items/1"}))
    async with served(make_app(pipeline)) as base, httpx.AsyncClient() as client:
        await client.get(f"{base}/items/1")
        await client.get(f"{base}/healthz")
    assert [span.name for span in pipeline.finished()] == ["GET /healthz"]


async def test_untrusted_context_links_instead_of_parenting() -> None:
    pipeline = make_pipeline(untrusted_context=True)
    headers = {"traceparent": TRACEPARENT, "baggage": "tenant=acme"}
    seen_baggage: dict[str, object] = {}

    async def peek(request: Request) -> PlainTextResponse:
        from opentelemetry import baggage

        seen_baggage.update(baggage.get_all())
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/peek", peek)],
        middleware=[Middleware(TracingMiddleware, telemetry=pipeline.telemetry)],
    )
    async with served(app) as base, httpx.AsyncClient() as client:
        await client.get(f"{base}/peek", headers=headers)
    (span,) = pipeline.finished()
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" != CALLER_TRACE
    (link,) = span.links
    assert f"{link.context.trace_id:032x}" == CALLER_TRACE
    assert f"{link.context.span_id:016x}" == CALLER_SPAN
    assert seen_baggage == {}


async def test_a_trusted_listener_keeps_context_even_when_untrusted_is_set() -> None:
    """trust_incoming_context=True (the gateway's internal app) overrides TANDEM_UNTRUSTED_CONTEXT;
    beside it, an app without it on the same pipeline still links instead."""
    pipeline = make_pipeline(untrusted_context=True)
    headers = {"traceparent": TRACEPARENT, "baggage": "tenant=acme"}
    seen_baggage: list[dict[str, object]] = []

    async def peek(request: Request) -> PlainTextResponse:
        from opentelemetry import baggage

        seen_baggage.append(dict(baggage.get_all()))
        return PlainTextResponse("ok")

    def app(*, trusted: bool) -> Starlette:
        middleware = Middleware(
            TracingMiddleware, telemetry=pipeline.telemetry, trust_incoming_context=trusted
        )
        return Starlette(routes=[Route("/peek", peek)], middleware=[middleware])

    async with (
        served(app(trusted=True)) as internal,
        served(app(trusted=False)) as public,
        httpx.AsyncClient() as client,
    ):
        await client.get(f"{internal}/peek", headers=headers)
        await client.get(f"{public}/peek", headers=headers)
    kept, linked = pipeline.finished()
    assert f"{kept.context.trace_id:032x}" == CALLER_TRACE
    assert kept.parent is not None and f"{kept.parent.span_id:016x}" == CALLER_SPAN
    assert not kept.links
    assert linked.parent is None and f"{linked.context.trace_id:032x}" != CALLER_TRACE
    assert [f"{link.context.trace_id:032x}" for link in linked.links] == [CALLER_TRACE]
    assert seen_baggage == [{"tenant": "acme"}, {}]


async def test_request_duration_metric(pipeline: Pipeline) -> None:
    async with served(make_app(pipeline)) as base, httpx.AsyncClient() as client:
        for _ in range(3):
            await client.get(f"{base}/items/1")
    data = pipeline.metrics.get_metrics_data()
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    duration = metrics["http.server.request.duration"]
    assert duration.unit == "s"
    (point,) = duration.data.data_points
    assert point.count == 3
    assert point.explicit_bounds[:3] == (0.005, 0.01, 0.025)
    assert point.explicit_bounds[-1] == 10.0
    assert dict(point.attributes) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }


async def test_span_ends_at_the_last_body_byte_not_after_background_work(
    pipeline: Pipeline,
) -> None:
    import asyncio
    from time import time_ns

    from starlette.background import BackgroundTask

    background_started: list[int] = []

    async def background() -> None:
        background_started.append(time_ns())
        await asyncio.sleep(0.05)

    async def respond(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", background=BackgroundTask(background))

    app = Starlette(
        routes=[Route("/bg", respond)],
        middleware=[Middleware(TracingMiddleware, telemetry=pipeline.telemetry)],
    )
    async with served(app) as base, httpx.AsyncClient() as client:
        await client.get(f"{base}/bg")
        for _ in range(100):
            if background_started:
                break
            await asyncio.sleep(0.01)
    (span,) = pipeline.finished()
    # Ordering, not timing: the span closed with the body, before the background task began.
    assert span.end_time <= background_started[0]


async def test_repeated_requests_reuse_attributes_without_sharing_them(pipeline: Pipeline) -> None:
    """The request attributes are cached per (path, Host, user agent...); each span still gets its
    own, right ones."""
    async with served(make_app(pipeline)) as base, httpx.AsyncClient() as client:
        for agent, host in (
            ("probe/1", "a.example"),
            ("probe/2", "a.example"),
            ("probe/1", "b.example:8443"),
            ("probe/1", "a.example"),
        ):
            await client.get(f"{base}/items/1", headers={"user-agent": agent, "host": host})
        await client.get(
            f"{base}/status/503", headers={"user-agent": "probe/1", "host": "a.example"}
        )
    spans = pipeline.finished()
    seen = [
        (
            s.attributes["user_agent.original"],
            s.attributes["server.address"],
            s.attributes["server.port"],
        )
        for s in spans
    ]
    assert seen == [
        ("probe/1", "a.example", 80),
        ("probe/2", "a.example", 80),
        ("probe/1", "b.example", 8443),
        ("probe/1", "a.example", 80),
        ("probe/1", "a.example", 80),
    ]
    # Outcome attributes of one request never leak into the next one's span.
    assert [s.attributes["http.response.status_code"] for s in spans] == [200, 200, 200, 200, 503]
    assert "error.type" not in spans[3].attributes and spans[4].attributes["error.type"] == "503"
    assert [s.attributes["url.path"] for s in spans] == ["/items/1"] * 4 + ["/status/503"]


async def test_an_inner_app_names_the_error_type_of_its_answer(pipeline: Pipeline) -> None:
    """ERROR_TYPE_KEY in the scope replaces the bare status code as error.type, span and metric."""

    async def refuse(request: Request) -> PlainTextResponse:
        request.scope[ERROR_TYPE_KEY] = "load_shed"
        return PlainTextResponse("busy", status_code=503)

    app = Starlette(
        routes=[Route("/refuse", refuse)],
        middleware=[Middleware(TracingMiddleware, telemetry=pipeline.telemetry)],
    )
    async with served(app) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/refuse")
    assert response.status_code == 503
    (span,) = pipeline.finished()
    assert span.attributes["error.type"] == "load_shed"
    assert span.attributes["http.response.status_code"] == 503
    assert span.status.status_code is StatusCode.ERROR
    data = pipeline.metrics.get_metrics_data()
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    (point,) = metrics["http.server.request.duration"].data.data_points
    assert point.attributes["error.type"] == "load_shed"
