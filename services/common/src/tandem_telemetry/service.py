"""What both services share beyond tracing: JSON errors and health endpoints."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class BadRequest(Exception):
    """A request the service will not serve; becomes a JSON error naming the culprit."""

    def __init__(self, status: int, error: str, detail: str, **fields: object) -> None:
        super().__init__(detail)
        self.status = status
        self.body = {"error": error, "detail": detail, **fields}


def json_error(status: int, error: str, detail: str, **fields: object) -> JSONResponse:
    """A JSON error body: a stable machine-readable `error`, a human `detail`, and context fields."""
    return JSONResponse({"error": error, "detail": detail, **fields}, status_code=status)


async def bad_request_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BadRequest)
    return JSONResponse(exc.body, status_code=exc.status)


def int_param(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    """A query parameter as an int within [low, high], or BadRequest(422) naming it."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise BadRequest(422, "invalid_parameter", f"{name} must be an integer from {low} to {high}", parameter=name, value=raw)
    return value


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Readiness: the lifespan has started (set `app.state.ready`); peers are not consulted."""
    if getattr(request.app.state, "ready", False):
        return JSONResponse({"status": "ready"})
    return json_error(503, "not_ready", "the service is still starting or is shutting down")


HEALTH_ROUTES = [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
EXCEPTION_HANDLERS = {BadRequest: bad_request_handler}
