"""A small, bounded load generator for the fault scenarios: concurrent GETs on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from tandem_tracecheck import TempoClient


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # (send time, trace id) of each answered request, in send order.
    traces: list[tuple[float, str]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.statuses) + len(self.errors)

    @property
    def failures(self) -> int:
        return len(self.errors) + sum(1 for s in self.statuses if s != 200)

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    def merge(self, other: LoadResult) -> None:
        self.latencies += other.latencies
        self.statuses += other.statuses
        self.errors += other.errors
        self.traces += other.traces


async def drive(
    url: str,
    *,
    concurrency: int,
    requests: int | None = None,
    duration: float | None = None,
    keep_going: Callable[[], bool] = lambda: True,
    timeout: float = 30.0,
    result: LoadResult | None = None,
    close_connections: bool = False,
) -> LoadResult:
    """Send GET `url` from `concurrency` loops until `requests` are sent, `duration` passes, or
    `keep_going()` is false.

    Pass `result` to watch the answers while the load runs. `close_connections` sends each
    request on a connection of its own, closed with the answer (`connection: close`), so that
    the server lets go of every socket as soon as it has answered.
    """
    assert requests is not None or duration is not None, "the load must be bounded"
    result = LoadResult() if result is None else result
    sent = 0
    deadline = time.monotonic() + duration if duration is not None else float("inf")
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def loop(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while (
            keep_going() and time.monotonic() < deadline and (requests is None or sent < requests)
        ):
            sent += 1
            started = time.monotonic()
            try:
                async with session.get(url) as response:
                    body = await response.json(content_type=None)
                    result.statuses.append(response.status)
                    if response.status == 200:
                        result.traces.append((started, body["trace_id"]))
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            result.latencies.append(time.monotonic() - started)

    connector = aiohttp.TCPConnector(force_close=close_connections)
    async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:
        await asyncio.gather(*(loop(session) for _ in range(concurrency)))
    return result


async def answered(result: LoadResult, count: int, load: asyncio.Task[LoadResult]) -> None:
    """Return once `count` requests have been answered; fail if the load ends first."""
    while len(result.statuses) < count:
        if load.done():
            raise AssertionError(
                f"the load ended after {result.requests} requests: {result.errors[:3]}"
            )
        await asyncio.sleep(0.05)


def incomplete_traces(
    tempo_url: str, trace_ids: list[str], spans_per_trace: int, timeout: float
) -> list[tuple[str, int]]:
    """(trace id, spans found) for each trace not whole in Tempo within `timeout`."""
    incomplete = []
    with TempoClient(tempo_url) as tempo:
        deadline = time.monotonic() + timeout
        for trace_id in trace_ids:
            spans = tempo.trace(trace_id)
            while len(spans) < spans_per_trace and time.monotonic() < deadline:
                time.sleep(0.2)
                spans = tempo.trace(trace_id)
            if len(spans) != spans_per_trace:
                incomplete.append((trace_id, len(spans)))
    return incomplete


def run(url: str, **kwargs) -> LoadResult:
    return asyncio.run(drive(url, **kwargs))
