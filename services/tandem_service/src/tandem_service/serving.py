"""Serve a service's ASGI app with hypercorn, configured from the environment; drain on stop."""

from __future__ import annotations

import asyncio
import gc
import importlib
import multiprocessing
import os
import signal
import time
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.run import run as hypercorn_run
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from hypercorn.utils import wrap_app

from tandem_service.settings import ServerSettings
from tandem_telemetry.env import InvalidEnvVar

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def server_config(application_path: str, default_port: int) -> Config:
    """Hypercorn settings for a service: bind from HOST/PORT, uvloop, WEB_CONCURRENCY processes."""
    settings = ServerSettings.from_env(default_port)
    config = Config()
    config.application_path = application_path
    host = settings.host
    config.bind = [f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"]
    config.worker_class = "uvloop"
    config.workers = settings.web_concurrency
    config.use_reloader = settings.reload
    config.graceful_timeout = float(settings.graceful_timeout)
    # Spans already record every request; an access log line per request would double the cost.
    config.accesslog = None
    config.errorlog = "-"
    # Hypercorn (0.18) notices that a client closed an idle keep-alive
    # connection only when this timeout fires; until then the socket sits in
    # CLOSE-WAIT and holds a descriptor. Keep it short; Tandem's client lets
    # idle connections go sooner (KEEPALIVE_EXPIRY), so it never races it.
    config.keep_alive_timeout = 5
    return config


class InFlight:
    """Count the HTTP requests being served, so a stop can wait for them.

    The outermost app, the one hypercorn calls, so it takes hypercorn's ASGI types.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1


async def _serve(config: Config, sockets: Sockets | None) -> None:
    module_name, _, attribute = config.application_path.partition(":")
    app = getattr(importlib.import_module(module_name), attribute)
    # Every traced request allocates spans, contexts and dicts; the default
    # gen-0 threshold (700) runs the collector many times per request burst.
    # Freezing what import built and raising the threshold cut 20-25 µs per
    # traced request here (+7% req/s; benchmarks/NOTES.md). Cycles are still
    # collected, just in fewer, larger passes.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    in_flight = InFlight(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)

    async def drain() -> None:
        """Return when the server should close: after a stop signal, once in-flight requests end.

        Until then the server keeps accepting, because an in-flight request
        may need a new one to finish: the worker calls back into the gateway
        for quota while the gateway waits on the worker. Readiness turns
        false at once, so Kubernetes stops routing new traffic here.
        """
        await stop.wait()
        state = getattr(app, "state", None)
        if state is not None:
            state.ready = False
        budget = config.graceful_timeout
        deadline = time.monotonic() + budget
        while in_flight.count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        # Whatever is left gets the rest of the budget once the listeners close.
        config.graceful_timeout = max(0.5, deadline - time.monotonic())

    await worker_serve(
        wrap_app(in_flight, config.wsgi_max_body_size, "asgi"),
        config,
        sockets=sockets,
        shutdown_trigger=drain,
    )


def _serve_in_process(config: Config, sockets: Sockets | None = None) -> None:
    import uvloop

    try:
        uvloop.run(_serve(config, sockets))
    except InvalidEnvVar as exc:
        # A setting the app reads as it is imported: one line that names it, not a traceback.
        raise SystemExit(str(exc)) from None


def serve(application_path: str, default_port: int) -> int:
    """Serve `module:attribute` until SIGTERM or SIGINT, drain in-flight requests, flush, exit.

    WEB_CONCURRENCY=1 (the default) serves in this process. More spawns that
    many processes on shared sockets, each with its own telemetry pipeline;
    the parent only forwards the stop signal and exports nothing. RELOAD=true
    (the skaffold dev loop) hands over to hypercorn's reloading runner.
    """
    try:
        config = server_config(application_path, default_port)
    except InvalidEnvVar as exc:
        raise SystemExit(str(exc)) from None
    if config.use_reloader:
        return hypercorn_run(config)
    if config.workers == 1:
        _serve_in_process(config)
        return 0
    sockets = config.create_sockets()
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_serve_in_process, args=(config, sockets))
        for _ in range(config.workers)
    ]
    for child in children:
        child.start()

    def forward(signum: int, frame: object) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, forward)
    for child in children:
        child.join()
    return max((child.exitcode or 0) for child in children)
