"""Wire a Starlette app: server middleware, JSON logs, and a lifespan that flushes on exit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.applications import Starlette

from tandem_telemetry.bootstrap import load_fast_path, shutdown
from tandem_telemetry.logs import configure_logging
from tandem_telemetry.middleware import TracingMiddleware
from tandem_telemetry.propagation import configured_propagator
from tandem_telemetry.settings import TelemetrySettings


def instrument(
    app: Starlette, service_name: str, *, service_version: str | None = None
) -> Starlette:
    """Trace `app` as `service_name`: the one call a service makes.

    Adds `TracingMiddleware`, configures JSON logs, and wraps the app's
    lifespan so that telemetry is flushed and shut down (within
    TANDEM_SHUTDOWN_TIMEOUT) after the app's own shutdown. The pipeline
    itself starts in the serving process, on the app's first ASGI call.
    """
    # Fail at import, not on a request: a malformed variable, an unknown
    # propagator, or TANDEM_FAST_PATH=on with an SDK the fast path was not tested on.
    settings = TelemetrySettings.from_env()
    configured_propagator()
    if settings.fast_path == "on" and not settings.disabled:
        load_fast_path("on")
    configure_logging(settings.log_level, service_name=service_name)
    app.add_middleware(
        TracingMiddleware, service_name=service_name, service_version=service_version
    )
    app.router.lifespan_context = flushing_lifespan(app.router.lifespan_context)
    return app


def flushing_lifespan(
    inner: Callable[[Any], AbstractAsyncContextManager[Any]],
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """Wrap a lifespan so telemetry is flushed and shut down after it exits."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        try:
            async with inner(app) as state:
                yield state
        finally:
            # Off the event loop: an export may block on the network.
            await asyncio.to_thread(shutdown)

    return lifespan
