"""The gateway under overload, in-process against a stand-in worker held on events.

Its own limit sheds /api/work at once while its quota endpoint and health stay
open; a worker's shed comes back as a 503 the caller can tell from a failure;
its limit counts worker tasks, so it bounds its fan-out to the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.app import create_apps
from gateway.settings import Settings
from tandem_service import SHED_COUNTER, SHED_ERROR_TYPE
from tests.service.helpers import HANG_GUARD, Gate, metric_points
from tests.support import Pipeline, served

pytestmark = pytest.mark.anyio


@dataclass
class StandInWorker:
    """POST /tasks as the worker answers it: a quota call to the gateway, then the gate."""

    gate: Gate
    gateway_url: str = ""
    shed_with_retry_after: str | None = None
    quota_statuses: list[int] = field(default_factory=list)
    calls: int = 0
    in_flight: int = 0
    peak: int = 0

    def app(self) -> Starlette:
        async def tasks(request: Request) -> JSONResponse:
            self.calls += 1
            task = (await request.json())["task"]
            if self.shed_with_retry_after is not None:
                return JSONResponse(
                    {"error": "overloaded"},
                    status_code=503,
                    headers={"retry-after": self.shed_with_retry_after},
                )
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                async with httpx.AsyncClient(base_url=self.gateway_url) as gateway:
                    quota = await gateway.get("/internal/quota", params={"task": task})
                self.quota_statuses.append(quota.status_code)
                await self.gate.hold()
            finally:
                self.in_flight -= 1
            return JSONResponse({"task": task, "quota": quota.json()})

        return Starlette(routes=[Route("/tasks", tasks, methods=["POST"])])


@asynccontextmanager
async def gateway_and_worker(
    worker: StandInWorker, **settings: int
) -> AsyncIterator[httpx.AsyncClient]:
    async with served(worker.app()) as worker_url:
        apps = create_apps(Settings(worker_url=worker_url, **settings))
        async with (
            served(apps.public) as gateway_url,
            served(apps.internal) as internal_url,
            httpx.AsyncClient(base_url=gateway_url) as client,
        ):
            # The worker's quota calls go to the internal listener, which the limit never guards.
            worker.gateway_url = internal_url
            yield client


async def test_the_gateway_sheds_at_its_limit_and_its_quota_calls_still_pass(
    pipeline: Pipeline,
) -> None:
    limit, extra = 2, 3
    worker = StandInWorker(Gate(limit))
    async with gateway_and_worker(worker, max_in_flight=limit) as client:
        admitted = [
            asyncio.create_task(client.get("/api/work", params={"tasks": 1})) for _ in range(limit)
        ]
        # Each admitted request has reached the worker, and its quota call the gateway.
        await worker.gate.wait_all_in()
        shed = [await client.get("/api/work", params={"tasks": 1}) for _ in range(extra)]
        ready = await client.get("/readyz")
        assert all(not task.done() for task in admitted)
        worker.gate.release.set()
        done = await asyncio.wait_for(asyncio.gather(*admitted), HANG_GUARD)

    assert [r.status_code for r in done] == [200] * limit
    assert [r.status_code for r in shed] == [503] * extra
    assert all(r.headers["retry-after"] == "1" for r in shed)
    assert all(r.json()["error"] == "overloaded" for r in shed)
    assert ready.status_code == 200
    # The worker's quota calls came in while /api/work was at its limit.
    assert worker.quota_statuses == [200] * limit
    assert worker.calls == limit
    shed_spans = [
        s for s in pipeline.named("GET /api/work") if s.attributes.get("error.type") is not None
    ]
    assert len(shed_spans) == extra
    assert all(s.attributes["error.type"] == SHED_ERROR_TYPE for s in shed_spans)
    assert all(s.attributes["http.response.status_code"] == 503 for s in shed_spans)
    (counted,) = metric_points(pipeline, SHED_COUNTER)
    assert counted.value == extra
    assert counted.attributes["http.route"] == "/api/work"


async def test_a_worker_shed_is_a_503_with_retry_after_and_is_not_retried(
    pipeline: Pipeline,
) -> None:
    tasks = 3
    worker = StandInWorker(Gate(tasks), shed_with_retry_after="2")
    async with gateway_and_worker(worker) as client:
        response = await client.get("/api/work", params={"tasks": tasks})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    body = response.json()
    assert body["error"] == "worker_overloaded"
    assert body["failed_tasks"] == tasks
    # One call per task: a shed task is not retried.
    assert worker.calls == tasks
    posts = pipeline.named("POST")
    assert len(posts) == tasks
    assert all("http.request.resend_count" not in s.attributes for s in posts)


async def test_a_worker_503_without_retry_after_is_a_worker_error(pipeline: Pipeline) -> None:
    worker = StandInWorker(Gate(1), shed_with_retry_after="")
    async with gateway_and_worker(worker) as client:
        response = await client.get("/api/work", params={"tasks": 1})
    assert response.status_code == 502
    assert response.json()["error"] == "worker_error"
    assert "retry-after" not in response.headers


async def test_the_limit_counts_worker_tasks_so_it_bounds_the_fan_out(
    pipeline: Pipeline,
) -> None:
    """With a limit of 4 tasks, a 3-task request leaves room for 1 task, not for 2."""
    worker = StandInWorker(Gate(4))
    async with gateway_and_worker(worker, max_in_flight=4) as client:
        three = asyncio.create_task(client.get("/api/work", params={"tasks": 3}))
        await worker.gate.wait_entered(3)
        two = await client.get("/api/work", params={"tasks": 2})
        one = asyncio.create_task(client.get("/api/work", params={"tasks": 1}))
        await worker.gate.wait_all_in()
        another = await client.get("/api/work", params={"tasks": 1})
        worker.gate.release.set()
        done = await asyncio.wait_for(asyncio.gather(three, one), HANG_GUARD)
    assert [r.status_code for r in done] == [200, 200]
    assert [len(r.json()["results"]) for r in done] == [3, 1]
    assert two.status_code == 503 and another.status_code == 503
    # The worker never had more than the limit's 4 tasks at once.
    assert worker.peak == 4
    assert worker.calls == 4


def test_work_cost_reads_tasks_and_never_fails() -> None:
    from gateway.app import DEFAULT_TASKS, work_cost

    def scope(path: str, query: bytes) -> dict[str, object]:
        return {"path": path, "query_string": query}

    assert work_cost(scope("/api/work", b"tasks=8&delay_ms=5")) == 8
    assert work_cost(scope("/api/work", b"")) == DEFAULT_TASKS
    assert work_cost(scope("/api/work", b"tasks=%C2%B2")) == 1
    assert work_cost(scope("/api/work", b"tasks=-3")) == 1
    assert work_cost(scope("/api/work", b"tasks=" + b"9" * 40)) == 1
    assert work_cost(scope("/api/other", b"tasks=8")) == 1
