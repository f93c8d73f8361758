"""The collector process: three servers, the stores and the waterfall, on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

import grpc
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette

from tandem_collector.config import Config
from tandem_collector.console import ConsoleWriter
from tandem_collector.metrics_store import MetricsStore
from tandem_collector.otlp_grpc import TlsFiles, create_grpc_server
from tandem_collector.ports import host_port
from tandem_collector.prometheus import create_prometheus_app
from tandem_collector.receiver import Receiver
from tandem_collector.store import TraceStore
from tandem_collector.tempo_api import create_tempo_app
from tandem_collector.waterfall import render_trace

log = logging.getLogger("tandem_collector")

GRACE_SECONDS = 1.0  # per server; they stop in parallel, well within the 2 s budget
DROP_REPORT_INTERVAL = 5.0


@dataclass(frozen=True)
class Addresses:
    """Where the servers really listen (ports resolved when 0 was asked for)."""

    host: str
    grpc_port: int
    query_port: int
    prometheus_port: int
    tls: bool = False

    @property
    def grpc_endpoint(self) -> str:
        """``host:port`` for an OTLP/gRPC exporter."""
        return host_port(self.host, self.grpc_port)

    @property
    def query_url(self) -> str:
        return f"http://{host_port(self.host, self.query_port)}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{host_port(self.host, self.prometheus_port)}"

    def describe(self) -> str:
        """The one-line startup banner."""
        scheme = "grpcs" if self.tls else "grpc"
        return (
            f"tandem-collector listening: otlp-grpc={scheme}://{self.grpc_endpoint} "
            f"tempo-api={self.query_url} prometheus={self.prometheus_url}/metrics"
        )


def _listen(host: str, port: int, what: str) -> socket.socket:
    """Bind and listen now, so a busy port fails at startup and clients never race us."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot bind {what} to {host_port(host, port)}: {exc.strerror}") from exc
    return sock


class Collector:
    """One collector instance; ``start()``, then ``wait_stopped()`` or ``stop()``."""

    def __init__(self, config: Config, *, console: ConsoleWriter | None = None) -> None:
        self.config = config
        self.traces = TraceStore(config.max_traces, config.max_spans_per_trace)
        self.metrics = MetricsStore(expiration_seconds=config.metric_expiration)
        self.receiver = Receiver(self.traces, self.metrics)
        self.console = console
        self.addresses: Addresses | None = None
        self._stop_event: asyncio.Event | None = None
        self._grpc: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped: asyncio.Event | None = None
        self._reported_drops = (0, 0, 0)

    async def start(self) -> Addresses:
        """Bind every port and start serving; raises ``OSError`` if a port is taken."""
        config = self.config
        self._stop_event = asyncio.Event()
        self._stopped = asyncio.Event()
        tls = (
            TlsFiles(Path(config.tls_cert), Path(config.tls_key))
            if config.tls_cert and config.tls_key
            else None
        )
        sockets: list[socket.socket] = []
        try:
            self._grpc, grpc_port = create_grpc_server(
                self.receiver, config.host, config.grpc_port, tls, config.response_delay
            )
            await self._grpc.start()
            apps: list[tuple[str, int, Starlette]] = [
                (
                    "the query API",
                    config.query_port,
                    create_tempo_app(self.traces, config.live_seconds),
                ),
                (
                    "the Prometheus endpoint",
                    config.prometheus_port,
                    create_prometheus_app(self.metrics, self.receiver.self_metrics),
                ),
            ]
            for what, port, _ in apps:
                sockets.append(_listen(config.host, port, what))
        except BaseException:
            for sock in sockets:
                sock.close()
            if self._grpc is not None:
                await self._grpc.stop(None)
            raise
        query_port, prometheus_port = (int(sock.getsockname()[1]) for sock in sockets)
        for sock, (_, _, app) in zip(sockets, apps, strict=True):
            self._tasks.append(asyncio.create_task(self._serve_http(app, sock)))
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        self.addresses = Addresses(
            config.host, grpc_port, query_port, prometheus_port, tls=tls is not None
        )
        return self.addresses

    async def _serve_http(self, app: Starlette, sock: socket.socket) -> None:
        hyper = HypercornConfig()
        hyper.bind = [f"fd://{sock.fileno()}"]
        sock.detach()  # hypercorn now owns the file descriptor
        hyper.accesslog = None
        hyper.loglevel = "WARNING"
        hyper.graceful_timeout = GRACE_SECONDS
        assert self._stop_event is not None
        stop = self._stop_event.wait
        await serve(app, hyper, shutdown_trigger=stop)  # type: ignore[arg-type]  # scope types differ

    def request_stop(self) -> None:
        """Ask the collector to stop (safe to call from a signal handler on the loop)."""
        if self._stop_event is not None:
            self._stop_event.set()

    async def wait_stopped(self) -> None:
        """Wait for a stop request, then shut everything down."""
        assert self._stop_event is not None
        await self._stop_event.wait()
        await self._shutdown()

    async def stop(self) -> None:
        self.request_stop()
        await self._shutdown()

    async def _shutdown(self) -> None:
        assert self._stopped is not None
        if self._stopped.is_set():
            return
        grpc_stop = self._grpc.stop(GRACE_SECONDS) if self._grpc is not None else asyncio.sleep(0)
        _, pending = await asyncio.wait(
            [asyncio.ensure_future(grpc_stop), *self._tasks], timeout=GRACE_SECONDS + 0.5
        )
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
        self._print_settled(everything=True)
        self._report_drops()
        if self.console is not None:
            self.console.close()
        self._stopped.set()

    async def _housekeeping(self) -> None:
        """Print settled waterfalls and report drops, until stopped."""
        assert self._stop_event is not None
        interval = min(0.25, max(0.02, self.config.settle_seconds / 4))
        loop = asyncio.get_running_loop()
        last_report = loop.time()
        while not self._stop_event.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), interval)
            self._print_settled()
            if loop.time() - last_report >= DROP_REPORT_INTERVAL:
                self._report_drops()
                last_report = loop.time()

    def _print_settled(self, everything: bool = False) -> None:
        for trace in self.traces.take_settled(self.config.settle_seconds, everything=everything):
            if not self.config.quiet and self.console is not None:
                self.console.write(render_trace(trace, width=self.config.waterfall_width))
            trace.print_count += 1
            trace.printed_span_count = trace.span_count

    def _report_drops(self) -> None:
        stats = self.traces.stats
        current = (stats.spans_dropped_limit, stats.spans_rejected_invalid, stats.traces_evicted)
        if current == self._reported_drops:
            return
        self._reported_drops = current
        log.warning(
            "dropped so far: %d span(s) over --max-spans-per-trace=%d, %d span(s) with an "
            "invalid trace id, %d trace(s) (%d spans) evicted by --max-traces=%d",
            stats.spans_dropped_limit,
            self.traces.max_spans_per_trace,
            stats.spans_rejected_invalid,
            stats.traces_evicted,
            stats.spans_evicted,
            self.traces.max_traces,
        )


async def serve_until_signalled(config: Config) -> int:
    """Run a collector until SIGINT/SIGTERM; the exit status for ``__main__``."""
    import signal
    import sys

    collector = Collector(config, console=None if config.quiet else ConsoleWriter())
    try:
        addresses = await collector.start()
    except OSError as exc:
        print(f"tandem-collector: {exc}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, collector.request_stop)
    if collector.console is not None:
        collector.console.write(addresses.describe() + "\n")  # keeps order with waterfalls
    else:
        print(addresses.describe(), flush=True)
    await collector.wait_stopped()
    return 0
