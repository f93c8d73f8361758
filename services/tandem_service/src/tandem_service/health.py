"""Liveness and readiness endpoints, as the chart's probes call them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tandem_service.errors import json_error


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Readiness: the lifespan has started (set `app.state.ready`); peers are not consulted."""
    if getattr(request.app.state, "ready", False):
        return JSONResponse({"status": "ready"})
    return json_error(503, "not_ready", "the service is still starting or is shutting down")


# Never shed by the admission limit (tandem_service.admission): a probe must reach the app.
HEALTH_PATHS = ("/healthz", "/readyz")
LIVENESS_PATH, READINESS_PATH = HEALTH_PATHS

HEALTH_ROUTES = [
    Route(LIVENESS_PATH, healthz, methods=["GET"]),
    Route(READINESS_PATH, readyz, methods=["GET"]),
]
