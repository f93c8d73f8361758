"""Serve a service's ASGI apps with hypercorn, one per listener; drain on stop.

    serve({Listener.public(8080): "gateway.app:app",
           Listener("INTERNAL_PORT", 8082): "gateway.app:internal_app"})

Each listener is a hypercorn server of its own (its own bind and app) in one
event loop; they share one stop, which drains the requests in flight on all
of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from hypercorn.utils import check_for_updates, files_to_watch, wrap_app

from tandem_service.settings import Listener, ServerSettings
from tandem_telemetry.env import InvalidEnvVar

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A listener with the sockets it serves on, bound before any app starts.
Served = tuple[Config, Sockets]


def server_configs(listeners: Mapping[Listener, str]) -> list[Config]:
    """Hypercorn settings per listener: bind from HOST and its port, uvloop, WEB_CONCURRENCY."""
    settings = ServerSettings.from_env()
    ports: dict[int, Listener] = {}
    configs = []
    for listener, application_path in listeners.items():
        port = listener.port_from_env()
        taken = ports.setdefault(port, listener)
        if taken is not listener:
            # Not left to bind() to refuse: with WEB_CONCURRENCY > 1 the sockets
            # share their port (SO_REUSEPORT), so both would bind and one port
            # would serve two apps.
            raise InvalidEnvVar(
                f"{listener.port_variable}={port} is also {taken.port_variable}: "
                "each listener needs a port of its own"
            )
        configs.append(_config(application_path, port, settings))
    return configs


def _config(application_path: str, port: int, settings: ServerSettings) -> Config:
    config = Config()
    config.application_path = application_path
    host = settings.host
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.worker_class = "uvloop"
    config.workers = settings.web_concurrency
    config.use_reloader = settings.reload
    config.graceful_timeout = float(settings.graceful_timeout)
    # Spans already record every request; an access log line per request would double the cost.
    config.accesslog = None
    config.errorlog = "-"
    # No `server: hypercorn-h11` banner: it tells a scanner what to try.
    config.include_server_header = False
    # Hypercorn (0.18) notices that a client closed an idle keep-alive
    # connection only when this timeout fires; until then the socket sits in
    # CLOSE-WAIT and holds a descriptor. Keep it short; Tandem's client lets
    # idle connections go sooner (KEEPALIVE_EXPIRY), so it never races it.
    config.keep_alive_timeout = 5
    return config


def _listen(config: Config) -> Sockets:
    """Bind and listen now, before any app starts: a connection to any listener then
    waits in its backlog instead of being refused, so once the public port
    answers ready, the internal one accepts too."""
    try:
        sockets = config.create_sockets()
    except OSError as exc:
        raise SystemExit(f"cannot listen on {config.bind[0]}: {exc.strerror}") from None
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
    return sockets


class InFlight:
    """Count the HTTP requests being served on every listener, so a stop can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def track(self, app: Any) -> Any:
        """`app`, counted. The outermost app, the one hypercorn calls, so it takes hypercorn's
        ASGI types."""

        async def counted(
            scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
        ) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            self.count += 1
            self._idle.clear()
            try:
                await app(scope, receive, send)
            finally:
                self.count -= 1
                if not self.count:
                    self._idle.set()

        return counted

    async def idle(self) -> None:
        """Return once no request is in flight."""
        await self._idle.wait()


def _load(application_path: str) -> Any:
    module_name, _, attribute = application_path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


async def _serve(served: list[Served]) -> None:
    apps = [_load(config.application_path) for config, _ in served]
    # Every traced request allocates spans, contexts and dicts; the default
    # gen-0 threshold (700) runs the collector many times per request burst.
    # Freezing what import built and raising the threshold cut 20-25 µs per
    # traced request here (+7% req/s; benchmarks/NOTES.md). Cycles are still
    # collected, just in fewer, larger passes.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    in_flight = InFlight()
    stop = asyncio.Event()
    close = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)

    async def drain() -> None:
        """After a stop signal, close every listener once the requests in flight on all end.

        Until then every listener keeps accepting, because an in-flight request
        may need a new one to finish: the worker calls back into the gateway's
        internal listener for quota while the gateway's public request waits
        on the worker. Readiness turns false at once, so Kubernetes stops
        routing new traffic here.
        """
        await stop.wait()
        for app in apps:
            state = getattr(app, "state", None)
            if state is not None:
                state.ready = False
        budget = served[0][0].graceful_timeout
        deadline = time.monotonic() + budget
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(in_flight.idle(), budget)
        # Whatever is left gets the rest of the budget once the listeners close.
        for config, _ in served:
            config.graceful_timeout = max(0.5, deadline - time.monotonic())
        close.set()

    draining = asyncio.create_task(drain())
    try:
        async with asyncio.TaskGroup() as servers:
            for (config, sockets), app in zip(served, apps, strict=True):
                wrapped = wrap_app(in_flight.track(app), config.wsgi_max_body_size, "asgi")
                servers.create_task(
                    worker_serve(wrapped, config, sockets=sockets, shutdown_trigger=close.wait)
                )
    finally:
        draining.cancel()


def _serve_in_process(served: list[Served]) -> None:
    import uvloop

    try:
        uvloop.run(_serve(served))
    except InvalidEnvVar as exc:
        # A setting the app reads as it is imported: one line that names it, not a traceback.
        raise SystemExit(str(exc)) from None


def serve(listeners: Mapping[Listener, str]) -> int:
    """Serve each listener's `module:attribute` until SIGTERM or SIGINT, drain, flush, exit.

    WEB_CONCURRENCY=1 (the default) serves in this process. More spawns that
    many processes, each serving every listener on the shared sockets, each
    with its own telemetry pipeline; the parent only forwards the stop signal
    and exports nothing. RELOAD=true (the skaffold dev loop) also restarts
    the processes when a source file changes.
    """
    try:
        configs = server_configs(listeners)
    except InvalidEnvVar as exc:
        raise SystemExit(str(exc)) from None
    served = [(config, _listen(config)) for config in configs]
    workers, reload = configs[0].workers, configs[0].use_reloader
    if workers == 1 and not reload:
        _serve_in_process(served)
        return 0
    return _supervise(served, workers, reload=reload)


def _supervise(served: list[Served], workers: int, *, reload: bool) -> int:
    """Run `workers` serving processes until a stop signal; with reload, restart them when a
    source file changes. Returns the worst exit code."""
    context = multiprocessing.get_context("spawn")
    children: list[BaseProcess] = []
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, forward)
    if reload:
        # Imported here too, so that their source files are among those watched.
        for config, _ in served:
            _load(config.application_path)
    exit_codes = [0]
    while not stopping:
        children[:] = [
            context.Process(target=_serve_in_process, args=(served,)) for _ in range(workers)
        ]
        for child in children:
            child.start()
        restart = reload and _source_changed(children, lambda: stopping)
        if restart:
            for child in children:
                if child.pid is not None and child.is_alive():
                    os.kill(child.pid, signal.SIGTERM)  # a stop like any other: they drain
        for child in children:
            child.join()
        exit_codes += [child.exitcode or 0 for child in children]
        if not restart:
            break
    return max(exit_codes)


def _source_changed(children: list[BaseProcess], stopping: Callable[[], bool]) -> bool:
    """Wait while every child runs; True as soon as a loaded source file changes."""
    files = files_to_watch()
    while not stopping() and all(child.is_alive() for child in children):
        wait([child.sentinel for child in children], timeout=1)
        if check_for_updates(files):
            return True
    return False
