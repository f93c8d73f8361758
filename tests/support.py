"""Test helpers: an in-memory telemetry pipeline, real loopback HTTP servers, and a relay."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tandem_telemetry
from tandem_telemetry import Telemetry, TelemetrySettings


@dataclass
class Pipeline:
    telemetry: Telemetry
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]


def make_pipeline(service_name: str = "test-service", **settings: Any) -> Pipeline:
    """Set up the process pipeline with in-memory exporters, replacing any earlier one."""
    tandem_telemetry.shutdown()
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    telemetry = tandem_telemetry.setup(
        service_name,
        # The environment's settings (TANDEM_FAST_PATH among them), with the test's overrides.
        settings=dataclasses.replace(TelemetrySettings.from_env(), **settings),
        span_processor=SimpleSpanProcessor(spans),
        metric_reader=reader,
    )
    return Pipeline(telemetry, spans, reader)


def free_port() -> int:
    """A free loopback port for a process to bind, below the ephemeral range (see
    tandem_collector.ports).

    In-process servers need none: `served` binds its own socket.
    """
    from tandem_collector.ports import free_port as collector_free_port

    return collector_free_port()


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound here, not listening, so none can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@asynccontextmanager
async def served(app) -> AsyncIterator[str]:
    """Serve an ASGI app with hypercorn on a loopback port, in this event loop; yield its URL."""
    # Bound here, on a port the OS picks, and handed to hypercorn: no port can be taken meanwhile.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    try:
        yield base
    finally:
        stop.set()
        await task


class Relay:
    """A loopback HTTP relay: each GET is forwarded to `upstream`, and its answer returned.

    `seen` keeps the headers of each request (lower-case names). With `hold=True` every request
    waits at the relay until `release()`, and `arrived` is set when the first comes in: between
    the worker and the gateway's quota check, that tells a test a request is in flight in both.
    """

    HOLD_LIMIT = 30.0  # seconds a held request waits for release() before it goes on anyway

    def __init__(self, upstream: str, *, hold: bool = False) -> None:
        self.seen: list[dict[str, str]] = []
        self.arrived = threading.Event()
        self._released = threading.Event()
        if not hold:
            self._released.set()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                relay.seen.append({k.lower(): v for k, v in self.headers.items()})
                relay.arrived.set()
                relay._released.wait(relay.HOLD_LIMIT)
                forward = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                request = urllib.request.Request(upstream + self.path, headers=forward)
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        status, body = answer.status, answer.read()
                        kind = answer.headers.get("content-type", "")
                except urllib.error.HTTPError as error:
                    status, body = error.code, error.read()
                    kind = error.headers.get("content-type", "")
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# make's own line on a failed recipe, at any depth: `make: ***` alone, `make[1]: ***` under
# another make (as under `make test`).
MAKE_ERROR = re.compile(r"^make(\[\d+\])?: \*\*\* ")


def make_own_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What a make run printed, but for make's own `make: *** [...] Error 1` lines."""
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if not MAKE_ERROR.match(line)]
