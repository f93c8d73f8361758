"""Section 1: one trivial Starlette app in four variants, served by `python -m benchmarks.serve`.

    BENCH_APP=benchmarks.apps:untraced      (a) no tracing middleware
    BENCH_APP=benchmarks.apps:tandem        (b) tandem_telemetry.instrument (TracingMiddleware)
    BENCH_APP=benchmarks.apps:contrib       (c) opentelemetry-instrumentation-asgi,
                                                exclude_spans send/receive
    BENCH_APP=benchmarks.apps:starlette     (d) starlette.middleware.opentelemetry's
                                                OpenTelemetryMiddleware
    BENCH_APP=benchmarks.apps:floor_sdk     (e) one bare span per request through the SDK's
                                                Tracer, nothing else
    BENCH_APP=benchmarks.apps:floor_tandem  (f) the same bare span through Tandem's RequestTracer

and, for section 3, the worker stand-in the hop is measured against:

    BENCH_APP=benchmarks.apps:hop_worker    POST /tasks: read the JSON task, answer a
                                            worker-sized JSON body

(b) to (f) export through the same pipeline: tandem_telemetry's
TracerProvider with the SDK's BatchSpanProcessor and OTLP/gRPC exporter, and
its MeterProvider, configured by the same OTEL_* variables. Each variant is
built only when asked for, in the serving process.

(e) and (f) are not instrumentations anyone should ship: they measure the
floor. A span with no attributes that the app cannot see, no metric, no
propagation and no response header is the least a middleware that traces
each request through the SDK can do; whatever (b) adds on top of (f) is
Tandem's to answer for, and no middleware can score above (e) by making
its spans the SDK's standard way.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

TRIVIAL_PATH = "/hello"
UNTRACED_PATHS = "healthz,readyz"


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def readyz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ready")


def _app() -> Starlette:
    return Starlette(
        routes=[
            Route(TRIVIAL_PATH, hello, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )


def build_untraced() -> Starlette:
    return _app()


def build_tandem() -> Starlette:
    from tandem_telemetry import instrument

    return instrument(_app(), "bench-trivial")


def add_contrib_middleware(app: Starlette, telemetry: Any) -> None:
    """(c)'s middleware, also the contrib-instrumented services' (benchmarks.contrib_services): one
    SERVER span per request."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app.add_middleware(
        OpenTelemetryMiddleware,
        excluded_urls=UNTRACED_PATHS,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        exclude_spans=["send", "receive"],
    )


def build_contrib() -> Starlette:
    from tandem_telemetry import setup

    app = _app()
    add_contrib_middleware(app, setup("bench-trivial"))
    return app


def build_starlette() -> Starlette:
    from starlette.middleware.opentelemetry import OpenTelemetryMiddleware

    from tandem_telemetry import setup

    telemetry = setup("bench-trivial")
    app = _app()
    app.add_middleware(
        OpenTelemetryMiddleware,
        excluded_urls=[r"/(healthz|readyz)$"],
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    return app


class OneBareSpan:
    """Start and end one SERVER span per HTTP request, and do nothing else (see (e), (f) above)."""

    def __init__(self, app: ASGIApp, tracer: Any) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/readyz":
            await self.app(scope, receive, send)
            return
        span = self.tracer.start_span("GET", Context(), SpanKind.SERVER)
        try:
            await self.app(scope, receive, send)
        finally:
            span.end()


def _build_floor(lean: bool) -> Starlette:
    from benchmarks.floors import floor_tracer

    app = _app()
    app.add_middleware(OneBareSpan, tracer=floor_tracer("bench-trivial", lean=lean)[0])
    return app


async def tasks(request: Request) -> JSONResponse:
    task = (await request.json())["task"]
    return JSONResponse(
        {
            "task": task,
            "digest": "0" * 64,
            "quota": {"task": task, "allowed": True, "granted": 1},
            "baggage": {},
        }
    )


def build_hop_worker() -> Starlette:
    """Untraced, so that every client meets the same server cost."""
    return Starlette(
        routes=[Route("/tasks", tasks, methods=["POST"]), Route("/readyz", readyz, methods=["GET"])]
    )


BUILDERS = {
    "untraced": build_untraced,
    "tandem": build_tandem,
    "contrib": build_contrib,
    "starlette": build_starlette,
    "floor_sdk": lambda: _build_floor(lean=False),
    "floor_tandem": lambda: _build_floor(lean=True),
    "hop_worker": build_hop_worker,
}


def __getattr__(name: str) -> Starlette:
    try:
        return BUILDERS[name]()
    except KeyError:
        raise AttributeError(name) from None
