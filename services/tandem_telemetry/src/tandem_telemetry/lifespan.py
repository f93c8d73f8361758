"""Wire a Starlette app: server middleware, JSON logs, and a lifespan that flushes on exit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette

from tandem_telemetry.bootstrap import Telemetry, load_fast_path, setup, shutdown
from tandem_telemetry.env import InvalidEnvVar
from tandem_telemetry.logs import configure_logging
from tandem_telemetry.middleware import TracingMiddleware
from tandem_telemetry.propagation import configured_propagator
from tandem_telemetry.settings import TelemetrySettings


def instrument(
    app: Starlette,
    service_name: str,
    *,
    service_version: str | None = None,
    trust_incoming_context: bool = False,
) -> Starlette:
    """Trace `app` as `service_name`: the one call a service makes, once per app it serves.

    Adds `TracingMiddleware`, configures JSON logs, and wraps the app's
    lifespan so that telemetry is flushed and shut down (within
    TANDEM_SHUTDOWN_TIMEOUT) after the app's own shutdown; with several
    apps in one process (one per listener), after the last of them stops.
    The pipeline itself, one per process, starts in the serving process:
    at `start()`, which `tandem_service.serve` calls before it listens, or
    else on the first ASGI call.

    trust_incoming_context=True is for an app on a listener that only
    Tandem's own services can reach: it keeps their trace context even when
    TANDEM_UNTRUSTED_CONTEXT is true.
    """
    # Fail at import, not on a request: a malformed variable (OTEL_* ones included), an
    # unknown propagator, or TANDEM_FAST_PATH=on with an SDK the fast path was not tested on.
    settings = TelemetrySettings.from_env()
    if _running.service is None:
        _running.service = (service_name, service_version)
    configured_propagator()
    if settings.fast_path == "on" and not settings.disabled:
        load_fast_path("on")
    configure_logging(settings.log_level, service_name=service_name)
    app.add_middleware(
        TracingMiddleware,
        service_name=service_name,
        service_version=service_version,
        trust_incoming_context=trust_incoming_context,
    )
    app.router.lifespan_context = flushing_lifespan(app.router.lifespan_context)
    return app


@dataclass
class _RunningLifespans:
    """Flushing lifespans running in this process: one per app it serves."""

    count: int = 0
    # The service the first `instrument` call wired: what `start` builds the pipeline for.
    service: tuple[str, str | None] | None = None


_running = _RunningLifespans()


def start() -> Telemetry | None:
    """Build this process's pipeline now, for the service `instrument` wired, and return it.

    A server calls this before it listens, so that whatever the SDK cannot build
    from the settings stops the process at start (InvalidEnvVar, naming the
    cause) instead of failing each request. Without it, the pipeline starts on the
    first ASGI call. None if no app was instrumented in this process.
    """
    if _running.service is None:
        return None
    service_name, service_version = _running.service
    try:
        return setup(service_name, service_version=service_version)
    except InvalidEnvVar:
        raise
    # Whatever the SDK raises for a setting it cannot use, e.g. a certificate that is not PEM.
    except Exception as exc:  # noqa: BLE001
        raise InvalidEnvVar(
            f"the telemetry pipeline cannot be built from these settings: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def flushing_lifespan(
    inner: Callable[[Any], AbstractAsyncContextManager[Any]],
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """Wrap a lifespan so telemetry is flushed and shut down after it exits.

    When one process serves several wrapped apps, the pipeline they share is
    shut down after the last one exits, so no app's final spans are dropped.
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        _running.count += 1
        try:
            async with inner(app) as state:
                yield state
        finally:
            _running.count -= 1
            if not _running.count:
                # Off the event loop: an export may block on the network.
                await asyncio.to_thread(shutdown)

    return lifespan
