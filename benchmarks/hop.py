"""Section 3: the gateway->worker hop, client side only.

    python -m benchmarks.hop server --port P
    python -m benchmarks.hop client --kind KIND --url URL --concurrency 32 --seconds S

The server is a worker stand-in that costs next to nothing: a raw asyncio
protocol on uvloop that reads each HTTP/1.1 request (body by Content-Length)
and answers a fixed JSON body the size of the worker's. With a real Starlette
server on the other end, the server (one core) would be the bottleneck and
every client would look alike; here the client is what is measured.

The client process fires POST /tasks with a JSON body through one client,
`--concurrency` requests in flight, first for `--warmup` seconds, then for
`--seconds`, on uvloop like the services, and prints one JSON line. `tandem`
is tandem_telemetry.create_client as the gateway uses it, tracing on and
exporting to the collector named by OTEL_EXPORTER_OTLP_ENDPOINT; `aiohttp` a
raw aiohttp.ClientSession; `httpx` an httpx.AsyncClient with its default
transport and limits. Two floors wrap a client's call in one bare CLIENT
span (started before, ended after; no attributes, metric or propagation)
exported through the same pipeline as `tandem`: `aiohttp_span` around the
raw aiohttp session, started through the SDK's Tracer (the floor for any
client traced the SDK's standard way); `tandem_bare_span` around Tandem's
client with its own tracing off, started through Tandem's RequestTracer
(the floor for a traced httpx client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

_BODY = json.dumps(
    {
        "task": 0,
        "digest": "0" * 64,
        "quota": {"task": 0, "allowed": True, "granted": 1},
        "baggage": {},
    }
).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


class _Http11(asyncio.Protocol):
    """Answer every complete request on a keep-alive connection with RESPONSE."""

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a TCP server: always a Transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            length = 0
            head = buffer[:end].lower()
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)].strip())
            total = end + 4 + length
            if len(buffer) < total:
                break
            buffer = buffer[total:]
            assert self._transport is not None
            self._transport.write(RESPONSE)
        self._buffer = buffer


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http11, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


async def _measure(
    send: Callable[[int], Awaitable[None]],
    concurrency: int,
    seconds: float,
    failures: tuple[type[Exception], ...],
) -> tuple[int, int, float]:
    """Run `concurrency` request loops for `seconds`; return (completed, errors, seconds taken)."""
    completed = errors = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def loop(worker: int) -> None:
        nonlocal completed, errors
        n = worker
        while time.perf_counter() < deadline:
            try:
                await send(n)
                completed += 1
            except failures:
                errors += 1
            n += concurrency

    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    return completed, errors, time.perf_counter() - start


def _with_bare_span(
    send: Callable[[int], Awaitable[None]], *, lean: bool
) -> tuple[Callable[[int], Awaitable[None]], Callable[[], object]]:
    """`send` inside one CLIENT span per call, nothing else (benchmarks.floors); and the flush."""
    from opentelemetry.trace import SpanKind

    from benchmarks.floors import floor_tracer

    tracer, telemetry = floor_tracer("bench-hop", lean=lean)

    async def traced(n: int) -> None:
        span = tracer.start_span("POST", kind=SpanKind.CLIENT)
        try:
            await send(n)
        finally:
            span.end()

    return traced, lambda: telemetry.shutdown(10)


async def _client(
    kind: str, url: str, concurrency: int, seconds: float, warmup: float
) -> dict[str, Any]:
    send: Callable[[int], Awaitable[None]]
    close: Callable[[], Awaitable[None]]
    flush: Callable[[], object] | None = None
    if kind in ("tandem", "tandem_bare_span"):
        import httpx

        import tandem_telemetry
        from tandem_telemetry import TelemetrySettings, Timeouts, create_client
        from tandem_telemetry.bootstrap import build_telemetry

        # The floor keeps Tandem's client (httpx over aiohttp, retries, timeouts), its tracing off.
        own = (
            build_telemetry("bench-hop", settings=TelemetrySettings(disabled=True))
            if kind == "tandem_bare_span"
            else None
        )
        client = create_client(
            url, timeouts=Timeouts(connect=1.0, read=5.0, total=5.0), telemetry=own
        )

        async def post(n: int) -> None:
            response = await client.post("/tasks", json={"task": n})
            if response.status_code != 200:
                raise RuntimeError(response.status_code)
            response.json()

        if kind == "tandem":
            telemetry = tandem_telemetry.setup("bench-hop")
            send, flush = post, lambda: telemetry.shutdown(10)
        else:
            send, flush = _with_bare_span(post, lean=True)
        close = client.aclose
        # A non-200 answer, a transport error or timeout (Tandem's are httpx's), a bad body.
        failures: tuple[type[Exception], ...] = (RuntimeError, httpx.HTTPError, ValueError)
    elif kind == "httpx":
        import httpx

        plain = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(5.0, connect=1.0))

        async def post_plain(n: int) -> None:
            response = await plain.post("/tasks", json={"task": n})
            if response.status_code != 200:
                raise RuntimeError(response.status_code)
            response.json()

        send, close = post_plain, plain.aclose
        failures = (RuntimeError, httpx.HTTPError, ValueError)
    elif kind in ("aiohttp", "aiohttp_span"):
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100),
            timeout=aiohttp.ClientTimeout(total=5.0, connect=1.0),
        )
        target = url.rstrip("/") + "/tasks"

        async def raw(n: int) -> None:
            async with session.post(target, json={"task": n}) as response:
                if response.status != 200:
                    raise RuntimeError(response.status)
                await response.json()

        send, flush = (raw, None) if kind == "aiohttp" else _with_bare_span(raw, lean=False)
        close = session.close
        failures = (RuntimeError, aiohttp.ClientError, TimeoutError, ValueError)
    else:
        raise SystemExit(f"unknown client kind {kind!r}")
    try:
        if warmup > 0:
            await _measure(send, concurrency, warmup, failures)
        completed, errors, elapsed = await _measure(send, concurrency, seconds, failures)
    finally:
        await close()
    if flush is not None:
        flush()  # after the clock stopped: the tandem client's spans reach the collector
    return {
        "kind": kind,
        "requests": completed,
        "errors": errors,
        "seconds": elapsed,
        "rps": completed / elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hop")
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, required=True)
    client = sub.add_parser("client")
    client.add_argument(
        "--kind",
        choices=("tandem", "tandem_bare_span", "aiohttp", "aiohttp_span", "httpx"),
        required=True,
    )
    client.add_argument("--url", required=True)
    client.add_argument("--concurrency", type=int, default=32)
    client.add_argument("--seconds", type=float, default=5.0)
    client.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)

    import uvloop

    if args.role == "server":
        uvloop.run(_serve(args.host, args.port))
        return 0
    result = uvloop.run(_client(args.kind, args.url, args.concurrency, args.seconds, args.warmup))
    print("HOP_JSON " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
