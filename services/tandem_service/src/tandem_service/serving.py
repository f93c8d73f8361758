"""Serve a service's ASGI apps with hypercorn, one per listener; drain on stop.

    serve({Listener.public(8080): "gateway.app:app",
           Listener("INTERNAL_PORT", 8082): "gateway.app:internal_app"})

Each listener is a hypercorn server of its own (its own bind and app) in one
event loop; they share one stop, which drains the requests in flight on all
of them. A request whose client leaves before its response is complete is
cancelled at once (`ClientWatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from hypercorn.utils import LifespanFailureError, check_for_updates, files_to_watch, wrap_app

import tandem_telemetry
from tandem_service.settings import Listener, ServerSettings
from tandem_telemetry import ERROR_TYPE_KEY
from tandem_telemetry.env import InvalidEnvVar

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A listener with the sockets it serves on, bound before any app starts.
Served = tuple[Config, Sockets]
# error.type of a request cancelled because its client left before the response was complete
# (its SERVER span and duration metric; no status code: nothing was answered).
CLIENT_GONE_ERROR_TYPE = "client_disconnected"


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
    # Hypercorn's messages ("Running on ...") through the root logger, whose one handler
    # writes JSON (tandem_telemetry.configure_logging): a Logger is used as given, where "-"
    # would get a plain-text handler of its own and every line would come out twice.
    config.errorlog = logging.getLogger("hypercorn.error")
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


class ClientWatch:
    """One HTTP request's receive channel, watched so that a client that leaves is seen while
    the app awaits something else, and the request is cancelled at once.

    Hypercorn (0.18) never cancels an app whose client has gone: it queues an
    `http.disconnect` for the app's next receive(), which an app waiting on its
    peer never makes; the request would hold its admission slots and its
    outgoing calls until they end. So a watcher task (`watch`) reads the
    server's receive() whenever the app is not reading it itself (one reader at
    a time, never two): a body message it reads is kept for the app's next
    receive(), never more than one unread `more_body` chunk ahead, so a large
    body keeps its backpressure. Once the body is read, it waits for
    `http.disconnect`. If that comes before the last response body message
    (`send`), the client is gone: `cancelled` is set, the scope names the reason
    for the span (ERROR_TYPE_KEY) and the request's task is cancelled, which
    frees what it holds and cancels its outgoing calls (closing their
    connections, so a peer served here cancels its work too). After the
    response it is the ordinary end of the exchange: background tasks go on,
    and a later receive() gets the disconnect. An app that never reads a body
    sent in several chunks is watched only once it has read them.
    """

    __slots__ = (
        "_app_read_done",
        "_app_reading",
        "_error",
        "_gone",
        "_messages",
        "_receive",
        "_request",
        "_scope",
        "_send",
        "_taken",
        "_waiters",
        "_watching",
        "cancelled",
        "responded",
    )

    def __init__(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        request: asyncio.Task[Any],
    ) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._request = request
        # Messages the watcher read for the app; futures of app receive() calls waiting for one.
        self._messages: deque[ASGIReceiveEvent] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        # Who is in the server's receive(): the watcher, or the app (the watcher then waits on
        # _app_read_done). The watcher waits on _taken until the app takes a more_body chunk.
        self._watching = False
        self._app_reading = False
        self._app_read_done: asyncio.Future[None] | None = None
        self._taken: asyncio.Future[None] | None = None
        self._gone: ASGIReceiveEvent | None = None
        self._error: BaseException | None = None
        self.responded = False
        self.cancelled = False

    async def watch(self) -> None:
        """Read the server for the app while it does not; cancel the request if the client
        leaves before the response is complete."""
        receive = self._receive
        loop = asyncio.get_running_loop()
        try:
            while self._gone is None:
                if self._app_reading:
                    self._app_read_done = loop.create_future()
                    await self._app_read_done
                    continue
                self._watching = True
                try:
                    message = await receive()
                finally:
                    self._watching = False
                if message["type"] != "http.request":
                    break
                self._messages.append(message)
                self._wake()
                if message.get("more_body", False):
                    self._taken = loop.create_future()
                    await self._taken
            else:
                return  # the app read the disconnect itself
        except Exception as exc:  # noqa: BLE001 - the server's receive() failed: the app's raises it
            self._error = exc
            self._wake()
            return
        # http.disconnect: the client left, or the response is complete.
        self._gone = message
        self._wake()
        if not self.responded:
            self.cancelled = True
            self._scope[ERROR_TYPE_KEY] = CLIENT_GONE_ERROR_TYPE  # type: ignore[literal-required]
            self._request.cancel()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def receive(self) -> ASGIReceiveEvent:
        """The app's receive(): a message the watcher read for it, else the server's own."""
        messages = self._messages
        while not messages:
            if self._gone is not None:
                return self._gone
            if self._error is not None:
                raise self._error
            if not self._watching:
                return await self._read()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        message = messages.popleft()
        taken = self._taken
        if taken is not None and not messages:
            self._taken = None
            if not taken.done():
                taken.set_result(None)
        return message

    async def _read(self) -> ASGIReceiveEvent:
        """Read the server directly, as the app (a body already there costs no suspension)."""
        self._app_reading = True
        try:
            message = await self._receive()
        finally:
            self._app_reading = False
            done, self._app_read_done = self._app_read_done, None
            if done is not None and not done.done():
                done.set_result(None)
        if message["type"] != "http.request":
            self._gone = message
        return message

    async def send(self, message: ASGISendEvent) -> None:
        """The app's send(): notes the last response body message, after which a disconnect
        cancels nothing."""
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.responded = True
        await self._send(message)


class InFlight:
    """Count the HTTP requests being served on every listener, so a stop can wait for them;
    cancel those whose client has left (`ClientWatch`)."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def track(self, app: Any) -> Any:
        """`app`, counted and watched. The outermost app, the one hypercorn calls, so it takes
        hypercorn's ASGI types."""

        async def counted(
            scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
        ) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            request = asyncio.current_task()
            assert request is not None  # hypercorn runs each request in a task of its own
            watch = ClientWatch(scope, receive, send, request)
            watcher = asyncio.create_task(watch.watch())
            self.count += 1
            self._idle.clear()
            try:
                await app(scope, watch.receive, watch.send)
            except asyncio.CancelledError:
                # Cancelled because the client left, and by nothing else: the request is over,
                # and there is no one to answer. Any other cancellation goes on.
                if not watch.cancelled or request.uncancel():
                    raise
            finally:
                watcher.cancel()
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
    _start_apps([config for config, _ in served])
    failures: list[str] = []
    apps = [_strict_lifespan(_load(config.application_path), failures) for config, _ in served]
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
    except* LifespanFailureError:
        # An app that could not start stops the process: it never serves without its lifespan.
        raise _start_failed(failures) from None
    finally:
        draining.cancel()


def _strict_lifespan(app: Any, failures: list[str]) -> Any:
    """`app`, whose lifespan startup fails loudly; each failure's message goes to `failures`.

    Hypercorn takes an exception raised before the startup completes to mean
    the app has no lifespan, and serves on without one ("continuing without
    Lifespan support"); reported as a failed startup, it stops the server.
    """

    async def strict(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        started = False

        async def watched_send(message: ASGISendEvent) -> None:
            nonlocal started
            if message["type"] == "lifespan.startup.failed":
                failures.append(message.get("message", ""))
            if message["type"] in ("lifespan.startup.complete", "lifespan.startup.failed"):
                started = True
            await send(message)

        try:
            await app(scope, receive, watched_send)
        except Exception:
            if started:
                raise
            await watched_send(
                {"type": "lifespan.startup.failed", "message": traceback.format_exc()}
            )

    return strict


def _start_failed(failures: list[str]) -> SystemExit:
    """The exit for an app that could not start: its traceback, if any, then one line."""
    message = (failures or ["no reason given"])[0].strip()
    if "\n" in message:
        print(message, file=sys.stderr)
    return SystemExit(f"cannot start: {message.splitlines()[-1] if message else 'no reason given'}")


def _serve_in_process(served: list[Served]) -> None:
    import uvloop

    try:
        uvloop.run(_serve(served))
    except InvalidEnvVar as exc:
        # A setting the app reads as it is imported: one line that names it, not a traceback.
        raise SystemExit(str(exc)) from None


def _start_apps(configs: list[Config]) -> None:
    """Import each listener's app, and build the telemetry pipeline: in the serving process,
    before it listens, so a setting that cannot be honoured stops it first (InvalidEnvVar)."""
    for config in configs:
        _load(config.application_path)
    tandem_telemetry.start()


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
        workers, reload = configs[0].workers, configs[0].use_reloader
        if workers == 1 and not reload:
            _start_apps(configs)
        else:
            # The serving processes start their own; importing the apps checks every setting.
            for config in configs:
                _load(config.application_path)
    except InvalidEnvVar as exc:
        raise SystemExit(str(exc)) from None
    served = [(config, _listen(config)) for config in configs]
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
