"""Section 2's comparison: the gateway and the worker with the contrib instrumentations
instead of Tandem's.

    BENCH_APP=benchmarks.contrib_services:gateway
        BENCH_INTERNAL_APP=benchmarks.contrib_services:gateway_internal
    BENCH_APP=benchmarks.contrib_services:worker

The routes, handlers, settings and health endpoints are the services' own
(imported from gateway.app and worker.app); what differs is the wiring:
opentelemetry-instrumentation-asgi's OpenTelemetryMiddleware (exclude_spans
send/receive, so a request still yields one SERVER span and the trace its
1 + 6N spans) and an httpx.AsyncClient with httpx's default transport,
instrumented by HTTPXClientInstrumentor. Spans leave through the same
pipeline as Tandem's (tandem_telemetry.setup: BatchSpanProcessor, OTLP/gRPC),
which also serves the worker's own "compute" and "publish result" spans.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from benchmarks.apps import add_contrib_middleware


def _contrib_app(
    service: str,
    routes: list[Route],
    client_url: str | None,
    timeout: httpx.Timeout,
    state: Callable[[Starlette, httpx.AsyncClient | None], None],
) -> Starlette:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    from tandem_service import EXCEPTION_HANDLERS, HEALTH_ROUTES, RequestGuard
    from tandem_telemetry import setup

    telemetry = setup(service)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            client = None
            if client_url is not None:
                client = await stack.enter_async_context(
                    httpx.AsyncClient(base_url=client_url, timeout=timeout)
                )
                HTTPXClientInstrumentor.instrument_client(
                    client,
                    tracer_provider=telemetry.tracer_provider,
                    meter_provider=telemetry.meter_provider,
                )
            state(app, client)
            app.state.ready = True
            try:
                yield
            finally:
                app.state.ready = False
                telemetry.force_flush()

    # Health routes on the public app only, as in the services.
    health = HEALTH_ROUTES if client_url is not None else []
    app = Starlette(
        routes=[*routes, *health], lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS
    )
    add_contrib_middleware(app, telemetry)
    # Like the services: the request guard is added last, so it runs first.
    app.add_middleware(RequestGuard)
    return app


def build_gateway() -> Starlette:
    """The gateway's public app: /api/work and health."""
    from gateway.app import work
    from gateway.settings import SERVICE_NAME, Settings

    settings = Settings.from_env()

    def state(app: Starlette, client: httpx.AsyncClient | None) -> None:
        app.state.worker = client

    routes = [Route("/api/work", work, methods=["GET"])]
    timeout = httpx.Timeout(settings.worker_timeout, connect=1.0)
    return _contrib_app(SERVICE_NAME, routes, settings.worker_url, timeout, state)


def build_gateway_internal() -> Starlette:
    """The gateway's internal app, on INTERNAL_PORT: /internal/quota for the worker."""
    from gateway.app import quota
    from gateway.settings import SERVICE_NAME

    def state(app: Starlette, client: httpx.AsyncClient | None) -> None:
        app.state.quota_counter = itertools.count(1)

    routes = [Route("/internal/quota", quota, methods=["GET"])]
    return _contrib_app(SERVICE_NAME, routes, None, httpx.Timeout(None), state)


def build_worker() -> Starlette:
    from worker.app import tasks
    from worker.settings import SERVICE_NAME, Settings

    settings = Settings.from_env()

    def state(app: Starlette, client: httpx.AsyncClient | None) -> None:
        app.state.gateway = client

    timeout = httpx.Timeout(2.0, connect=1.0)
    return _contrib_app(
        SERVICE_NAME,
        [Route("/tasks", tasks, methods=["POST"])],
        settings.gateway_internal_url,
        timeout,
        state,
    )


BUILDERS = {
    "gateway": build_gateway,
    "gateway_internal": build_gateway_internal,
    "worker": build_worker,
}


def __getattr__(name: str) -> Starlette:
    try:
        return BUILDERS[name]()
    except KeyError:
        raise AttributeError(name) from None
