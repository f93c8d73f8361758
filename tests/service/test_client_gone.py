"""The serving layer's client watch, over real HTTP in-process: a client that leaves cancels its
request and frees its slots; bodies still reach the app whole; a disconnect after the response
cancels nothing. The end-to-end case (gateway and worker processes) is
tests/integration/test_client_gone.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry.trace import StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from tandem_service import CLIENT_GONE_ERROR_TYPE, AdmissionLimit
from tandem_service.serving import InFlight
from tandem_telemetry import TracingMiddleware
from tests.service.helpers import HANG_GUARD, metric_points
from tests.support import Pipeline, served

pytestmark = pytest.mark.anyio


async def test_a_client_that_leaves_cancels_its_request_and_frees_its_slot(
    pipeline: Pipeline,
) -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(request: Request) -> Response:
        entered.set()
        try:
            await asyncio.Event().wait()  # the peer that never answers
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    async def fast(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/slow", slow), Route("/fast", fast)],
        middleware=[
            Middleware(TracingMiddleware, telemetry=pipeline.telemetry),
            Middleware(AdmissionLimit, limit=1),
        ],
    )
    in_flight = InFlight()
    async with served(in_flight.track(app)) as url:
        port = int(url.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: here\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(entered.wait(), HANG_GUARD)
        async with httpx.AsyncClient(base_url=url) as client:
            # The slow request holds the one slot.
            assert (await client.get("/fast")).status_code == 503
            writer.close()
            await asyncio.wait_for(cancelled.wait(), HANG_GUARD)
            await asyncio.wait_for(in_flight.idle(), HANG_GUARD)
            # Its slot was given back as it was cancelled.
            assert (await client.get("/fast")).status_code == 200

    (span,) = pipeline.named("GET /slow")
    assert span.attributes["error.type"] == CLIENT_GONE_ERROR_TYPE
    assert "http.response.status_code" not in span.attributes
    assert span.status.status_code is StatusCode.ERROR
    (point,) = [
        p
        for p in metric_points(pipeline, "http.server.request.duration")
        if p.attributes.get("http.route") == "/slow"
    ]
    assert point.attributes["error.type"] == CLIENT_GONE_ERROR_TYPE
    assert "http.response.status_code" not in point.attributes


async def test_a_body_in_chunks_reaches_the_app_whole_and_unread_bodies_do_no_harm() -> None:
    async def echo(request: Request) -> Response:
        return JSONResponse({"size": len(await request.body())})

    async def ignore(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/echo", echo, methods=["POST"]), Route("/ignore", ignore, methods=["POST"])]
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 10_000
            await asyncio.sleep(0)  # each chunk its own write

    in_flight = InFlight()
    async with served(in_flight.track(app)) as url, httpx.AsyncClient(base_url=url) as client:
        echoed = await client.post("/echo", content=chunks())
        ignored = await client.post("/ignore", content=b"y" * 1000)
        again = await client.post("/echo", content=b"z" * 1000)
    assert echoed.json() == {"size": 200_000}
    assert ignored.json() == {"ok": True}
    assert again.json() == {"size": 1000}


async def test_a_disconnect_after_the_response_cancels_nothing() -> None:
    """Background work goes on: the disconnect hypercorn queues after the response is the
    ordinary end of the exchange. The app's receive() then reports it."""
    after: list[Message] = []
    finished = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        # As a background task: after the response, the watch has seen the disconnect.
        after.append(await receive())
        await asyncio.sleep(0)
        finished.set()

    async with served(InFlight().track(app)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/")).text == "done"
        await asyncio.wait_for(finished.wait(), HANG_GUARD)
    assert after == [{"type": "http.disconnect"}]
