"""The gateway's two ASGI apps, one per listener.

- `app`, on PORT, the public one: `GET /api/work` fans out to the worker; health.
- `internal_app`, on INTERNAL_PORT, for Tandem's own services: `GET /internal/quota`
  answers the worker's quota checks.

A route of one is a 404 on the other, and trust follows the listener: the
public app applies TANDEM_UNTRUSTED_CONTEXT to every request, the internal
one keeps the worker's trace context.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple
from urllib.parse import parse_qsl

import httpx
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Scope

from gateway import __version__
from gateway.settings import SERVICE_NAME, Settings
from tandem_service import (
    EXCEPTION_HANDLERS,
    HEALTH_ROUTES,
    AdmissionLimit,
    BadRequest,
    RequestGuard,
    int_param,
    json_error,
)
from tandem_telemetry import Timeouts, create_client, instrument

logger = logging.getLogger("gateway")

DEFAULT_TASKS = 2
MAX_TASKS = 16
MAX_DELAY_MS = 5000
FAILURE_MODES = frozenset({"worker"})


def work_cost(scope: Scope) -> int:
    """What a request weighs against the admission limit: the worker tasks it fans out to.

    Read before routing and validation, so anything unreadable weighs 1 (and is refused by
    `work` with a 422 if it is admitted).
    """
    if scope["path"] != "/api/work":
        return 1
    for name, value in parse_qsl(scope["query_string"].decode("latin-1")):
        if name == "tasks":
            return int(value) if value.isascii() and value.isdigit() and len(value) < 3 else 1
    return DEFAULT_TASKS


async def work(request: Request) -> JSONResponse:
    """Send `tasks` concurrent tasks to the worker and gather their results."""
    tasks = int_param(request, "tasks", default=DEFAULT_TASKS, low=1, high=MAX_TASKS)
    delay_ms = int_param(request, "delay_ms", default=0, low=0, high=MAX_DELAY_MS)
    fail = request.query_params.get("fail")
    if fail is not None and fail not in FAILURE_MODES:
        raise BadRequest(
            422, "invalid_parameter", "fail must be 'worker'", parameter="fail", value=fail
        )

    client: httpx.AsyncClient = request.app.state.worker
    payloads = [{"task": i, "delay_ms": delay_ms, "fail": fail == "worker"} for i in range(tasks)]
    outcomes = await asyncio.gather(
        *(client.post("/tasks", json=p) for p in payloads), return_exceptions=True
    )
    trace_id = f"{trace.get_current_span().get_span_context().trace_id:032x}"
    failure = _worst_failure(outcomes, trace_id)
    if failure is not None:
        return failure
    # No failure: every outcome is a response.
    results = [o.json() for o in outcomes if isinstance(o, httpx.Response)]
    return JSONResponse({"trace_id": trace_id, "results": results})


def _worst_failure(
    outcomes: list[httpx.Response | BaseException], trace_id: str
) -> JSONResponse | None:
    """Map the fan-out's failures to one answer.

    A timeout (504) wins over an unreachable worker (503), which wins over an
    overloaded one (503 with Retry-After: the worker shed the task, so the
    caller may retry later), which wins over a bad reply (502).
    """
    statuses = []
    retry_after: list[int] = []
    for outcome in outcomes:
        if isinstance(outcome, httpx.TimeoutException):  # TotalTimeout included
            statuses.append(
                (504, "worker_timeout", "the worker did not answer within the gateway's timeout")
            )
        elif isinstance(outcome, httpx.TransportError):
            statuses.append(
                (503, "worker_unavailable", f"the worker could not be reached: {outcome}")
            )
        elif isinstance(outcome, BaseException):
            # Not a transport failure: a bug or a misconfiguration (say, a bad
            # WORKER_URL). Logged with its traceback; the caller still gets JSON.
            logger.error("worker call failed unexpectedly", exc_info=outcome)
            statuses.append(
                (
                    502,
                    "worker_call_failed",
                    f"the call to the worker failed: {type(outcome).__name__}",
                )
            )
        elif outcome.status_code == 503 and (seconds := _retry_after(outcome)) is not None:
            retry_after.append(seconds)
            statuses.append(
                (503, "worker_overloaded", "the worker is at its limit and shed the task")
            )
        elif outcome.status_code >= 500:
            statuses.append((502, "worker_error", f"the worker answered {outcome.status_code}"))
        elif outcome.status_code >= 400:
            statuses.append(
                (502, "worker_rejected", f"the worker refused the task with {outcome.status_code}")
            )
    if not statuses:
        return None
    status, error, detail = max(statuses)
    answer = json_error(
        status, error, detail, trace_id=trace_id, failed_tasks=len(statuses), tasks=len(outcomes)
    )
    if error == "worker_overloaded":
        answer.headers["retry-after"] = str(max(retry_after))
    return answer


def _retry_after(response: httpx.Response) -> int | None:
    """A response's Retry-After in whole seconds (RFC 9110 §10.2.3), if it has a usable one."""
    value = response.headers.get("retry-after", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


async def quota(request: Request) -> JSONResponse:
    """Answer the worker's quota check from in-process state."""
    task = int_param(request, "task", default=-1, low=0, high=2**31 - 1)
    if task < 0:
        raise BadRequest(422, "missing_parameter", "task is required", parameter="task")
    granted = next(request.app.state.quota_counter)
    return JSONResponse({"task": task, "allowed": True, "granted": granted})


class GatewayApps(NamedTuple):
    public: Starlette
    internal: Starlette


def create_apps(settings: Settings | None = None) -> GatewayApps:
    """Build the gateway's public and internal apps; settings default to the environment."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeouts = Timeouts(
            connect=1.0, read=settings.worker_timeout, total=settings.worker_timeout
        )
        async with create_client(settings.worker_url, timeouts=timeouts) as worker:
            app.state.worker = worker
            app.state.ready = True
            try:
                yield
            finally:
                app.state.ready = False

    public = Starlette(
        routes=[Route("/api/work", work, methods=["GET"]), *HEALTH_ROUTES],
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    # Added before instrument(...), so it runs inside the tracing middleware: a shed request
    # still gets its span. The limit is on worker tasks (work_cost), so it also bounds the
    # fan-out to the worker. It guards the public listener only: the worker's quota calls, on
    # the internal one, finish admitted requests and are never shed.
    public.add_middleware(AdmissionLimit, limit=settings.max_in_flight, cost=work_cost)
    public = instrument(public, SERVICE_NAME, service_version=__version__)

    internal = Starlette(
        routes=[Route("/internal/quota", quota, methods=["GET"])],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    internal.state.quota_counter = itertools.count(1)
    # Only the worker reaches this listener (the chart's NetworkPolicy), so the context its
    # calls carry is Tandem's own: the request's trace stays whole.
    internal = instrument(
        internal, SERVICE_NAME, service_version=__version__, trust_incoming_context=True
    )
    for served in (public, internal):
        # Added last, so it runs first: malformed Host headers and absolute-form targets never
        # reach a span.
        served.add_middleware(RequestGuard)
    return GatewayApps(public, internal)


app, internal_app = create_apps()
