"""Test helpers: an in-memory telemetry pipeline and real loopback HTTP servers."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
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
