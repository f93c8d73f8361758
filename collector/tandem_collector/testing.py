"""Run a collector inside the test process, on its own thread and event loop.

::

    with running_collector() as c:              # every port picked by the OS
        exporter = OTLPSpanExporter(endpoint=c.addresses.grpc_endpoint, insecure=True)
        httpx.get(f"{c.addresses.query_url}/api/v2/traces/{trace_id}")
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tandem_collector.config import Config
from tandem_collector.console import ConsoleWriter
from tandem_collector.server import Addresses, Collector

T = TypeVar("T")

TEST_DEFAULTS = Config(grpc_port=0, query_port=0, prometheus_port=0, quiet=True)


class RunningCollector:
    """A collector started on a background thread; see :func:`running_collector`."""

    def __init__(self, config: Config, console: ConsoleWriter | None = None) -> None:
        self.config = config
        self.collector = Collector(config, console=console)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(),), name="tandem-collector", daemon=True
        )

    @property
    def addresses(self) -> Addresses:
        assert self.collector.addresses is not None, "collector not started"
        return self.collector.addresses

    def start(self, timeout: float = 10.0) -> RunningCollector:
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("collector did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.collector.request_stop)
        self._thread.join(timeout)

    def call(self, fn: Callable[[Collector], T], timeout: float = 5.0) -> T:
        """Run ``fn(collector)`` on the collector's loop (safe inspection of its state)."""
        assert self._loop is not None

        async def invoke() -> T:
            return fn(self.collector)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(timeout)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self.collector.start()
        # Whatever stops the start is raised again by start(), on the thread that called it.
        except BaseException as exc:  # noqa: BLE001
            self._error = exc
            self._started.set()
            return
        self._started.set()
        await self.collector.wait_stopped()


@contextmanager
def running_collector(
    config: Config | None = None, console: ConsoleWriter | None = None, **overrides: Any
) -> Iterator[RunningCollector]:
    """Start a collector (free ports, quiet by default) and stop it afterwards."""
    base = TEST_DEFAULTS if config is None else config
    running = RunningCollector(dataclasses.replace(base, **overrides), console).start()
    try:
        yield running
    finally:
        running.stop()
