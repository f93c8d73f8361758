"""The worker under overload, in-process against a stand-in gateway whose quota answer is held.

A task beyond the worker's limit is shed before its body is read; the connection it came on
stays open for the next request, since the gateway's client pools its connections.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tandem_service import SHED_ERROR_TYPE
from tests.service.helpers import HANG_GUARD, Gate
from tests.support import Pipeline, served
from worker.app import create_app
from worker.settings import Settings

pytestmark = pytest.mark.anyio


def stand_in_gateway(gate: Gate) -> Starlette:
    async def quota(request: Request) -> JSONResponse:
        await gate.hold()
        return JSONResponse({"task": int(request.query_params["task"]), "allowed": True})

    return Starlette(routes=[Route("/internal/quota", quota)])


def post_task(body: dict[str, object]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        "POST /tasks HTTP/1.1\r\nHost: worker\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(":") for line in header_lines if line)
    )
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


async def test_shed_tasks_are_answered_on_a_connection_that_stays_open(
    pipeline: Pipeline,
) -> None:
    gate = Gate(1)
    async with served(stand_in_gateway(gate)) as gateway_url:
        worker = create_app(Settings(gateway_internal_url=gateway_url, max_in_flight=1))
        async with served(worker) as worker_url, httpx.AsyncClient(base_url=worker_url) as holder:
            held = asyncio.create_task(holder.post("/tasks", json={"task": 1}))
            await gate.wait_all_in()
            host, port = worker_url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            answers = []
            # The last body is one the worker would refuse (an unknown field): shed unread.
            for body in ({"task": 2}, {"task": 3}, {"task": 4, "pad": None}):
                writer.write(post_task(body))
                answers.append(await read_response(reader))
            gate.release.set()
            first = await asyncio.wait_for(held, HANG_GUARD)
            # The same connection, now that the limit has room again.
            writer.write(post_task({"task": 5}))
            after = await read_response(reader)
            writer.close()
            await writer.wait_closed()

    assert first.status_code == 200
    assert [status for status, _, _ in answers] == [503, 503, 503]
    assert all(headers["retry-after"] == "1" for _, headers, _ in answers)
    assert all(json.loads(body)["error"] == "overloaded" for _, _, body in answers)
    assert after[0] == 200, after
    shed_spans = [
        s for s in pipeline.named("POST /tasks") if s.attributes.get("error.type") is not None
    ]
    assert [s.attributes["error.type"] for s in shed_spans] == [SHED_ERROR_TYPE] * 3
