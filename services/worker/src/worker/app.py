"""The worker's ASGI app: `POST /tasks` computes a task, checks its quota, publishes the result."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from opentelemetry import baggage
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tandem_service import (
    EXCEPTION_HANDLERS,
    HEALTH_ROUTES,
    AdmissionLimit,
    BadRequest,
    RequestGuard,
    json_error,
)
from tandem_telemetry import Timeouts, create_client, get_tracer, instrument
from worker import __version__
from worker.settings import SERVICE_NAME, Settings

logger = logging.getLogger("worker")

MAX_BODY_BYTES = 16 * 1024
# The gateway's quota check takes task numbers up to this, and compute() packs one into 8 bytes.
MAX_TASK = 2**31 - 1
MAX_DELAY_MS = 5000
HASH_ROUNDS = 200
TASK_FIELDS = frozenset({"task", "delay_ms", "fail"})


async def read_task(request: Request) -> tuple[int, int, bool]:
    """Validate a task request body; BadRequest names what is wrong."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BadRequest(
            415,
            "unsupported_media_type",
            "send the task as application/json",
            content_type=content_type or None,
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(413, "body_too_large", f"the body may be at most {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(
                413, "body_too_large", f"the body may be at most {MAX_BODY_BYTES} bytes"
            )
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(422, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        # A few thousand nested brackets fit in the body limit and exhaust json's recursion limit.
        raise BadRequest(422, "invalid_json", "the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest(422, "invalid_json", "the body must be a JSON object")
    unknown = sorted(set(data) - TASK_FIELDS)
    if unknown:
        raise BadRequest(
            422, "invalid_field", f"unknown fields: {', '.join(unknown)}", fields=unknown
        )
    task, delay_ms, fail = data.get("task"), data.get("delay_ms", 0), data.get("fail", False)
    # bool is an int in Python, but not in JSON.
    if type(task) is not int or not 0 <= task <= MAX_TASK:
        raise BadRequest(
            422, "invalid_field", f"task must be an integer from 0 to {MAX_TASK}", field="task"
        )
    if delay_ms is None:
        delay_ms = 0
    if type(delay_ms) is not int or not 0 <= delay_ms <= MAX_DELAY_MS:
        raise BadRequest(
            422,
            "invalid_field",
            f"delay_ms must be an integer from 0 to {MAX_DELAY_MS}",
            field="delay_ms",
        )
    if type(fail) is not bool:
        raise BadRequest(422, "invalid_field", "fail must be true or false", field="fail")
    return task, delay_ms, fail


def compute(task: int) -> str:
    """Some real CPU work: a short SHA-256 chain seeded by the task number."""
    digest = task.to_bytes(8, "big")
    for _ in range(HASH_ROUNDS):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


async def publish_result(task: int, digest: str) -> None:
    """Publish a finished task (here: a log line joined to the trace) after the response is sent."""
    with get_tracer().start_as_current_span(
        "publish result", kind=SpanKind.INTERNAL, attributes={"tandem.task": task}
    ):
        logger.info("published result", extra={"task": task, "digest": digest})


async def tasks(request: Request) -> JSONResponse:
    """Run one task: compute, wait `delay_ms`, check quota with the gateway, answer, publish."""
    task, delay_ms, fail = await read_task(request)
    if fail:
        return json_error(
            500, "task_failed", "the task failed because the request asked it to", task=task
        )
    with get_tracer().start_as_current_span(
        "compute", kind=SpanKind.INTERNAL, attributes={"tandem.task": task}
    ):
        digest = compute(task)
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    gateway: httpx.AsyncClient = request.app.state.gateway
    try:
        quota = await gateway.get("/internal/quota", params={"task": task})
    except httpx.TransportError as exc:
        return json_error(
            503, "quota_unavailable", f"the gateway's quota check failed: {exc}", task=task
        )
    if quota.status_code != 200:
        return json_error(
            502, "quota_error", f"the gateway's quota check answered {quota.status_code}", task=task
        )
    return JSONResponse(
        {"task": task, "digest": digest, "quota": quota.json(), "baggage": dict(baggage.get_all())},
        background=BackgroundTask(publish_result, task, digest),
    )


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the worker app; settings default to the environment."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with create_client(
            settings.gateway_internal_url, timeouts=Timeouts(connect=1.0, read=2.0, total=3.0)
        ) as gateway:
            app.state.gateway = gateway
            app.state.ready = True
            try:
                yield
            finally:
                app.state.ready = False

    routes = [Route("/tasks", tasks, methods=["POST"]), *HEALTH_ROUTES]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    # Added before instrument(...), so it runs inside the tracing middleware: a shed task
    # still gets its span.
    app.add_middleware(AdmissionLimit, limit=settings.max_in_flight)
    app = instrument(app, SERVICE_NAME, service_version=__version__)
    # Added last, so it runs first: malformed Host headers and absolute-form targets never
    # reach a span.
    app.add_middleware(RequestGuard)
    return app


app = create_app()
