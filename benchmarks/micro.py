"""In-process micro-benchmarks of the hot path: what tracing adds per request, with no network.

    python -m benchmarks.micro                  # every case, each in its own process; a table
    python -m benchmarks.micro --json [--quick] # the same as one JSON line (the harness uses this)
    python -m benchmarks.micro CASE [--quick]   # one case

These are the figures the optimisations in tandem_telemetry (middleware.py,
client.py, propagation.py) were judged by: the end-to-end runs are too
noisy on a shared 2-core machine to resolve a few microseconds, these are
not (best of 7 batches, on uvloop). Spans go through the SDK's
BatchSpanProcessor to an exporter that drops them, so the figures are the
request path's cost only; `export` measures what OTLP encoding then costs
per span, on the processor's thread, with the SDK's encoder and with
Tandem's; `sdk` what a server span like Tandem's (start, outcome
attributes, end) and one http.server.request.duration measurement cost
through the SDK's generic Tracer and Histogram, and through Tandem's
RequestTracer and DurationHistogram.

Section 6 of `python -m benchmarks` (benchmarks/__main__.py): `measure` runs every case once a
round (a few of them quickly, in one round, at the smoke size) and returns each figure with its
round; `report` tables their medians.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.measuring import log, rotated
from benchmarks.results import heading, shown, spread, table, text

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

# server-disabled-caller: OTEL_SDK_DISABLED, and the request carries a caller's traceparent and
# baggage, which the middleware extracts and keeps current (and names in traceresponse).
SERVER_CASES = ("server-untraced", "server-disabled", "server-disabled-caller", "server-traced")
CLIENT_CASES = ("client-httpx", "client-disabled", "client-traced")
CASES = (*SERVER_CASES, *CLIENT_CASES, "sdk", "export")

SECTION = "micro"
# Per size: (the cases measured, whether quickly: a few batches, for the smoke run; rounds).
SIZES = {
    "full": (CASES, False, 5),
    "smoke": (
        (
            "server-untraced",
            "server-disabled-caller",
            "server-traced",
            "client-traced",
            "sdk",
            "export",
        ),
        True,
        1,
    ),
}

_BODY = json.dumps(
    {
        "task": 0,
        "digest": "0" * 64,
        "quota": {"task": 0, "allowed": True, "granted": 1},
        "baggage": {},
    }
).encode()


def _pipeline(disabled: bool = False) -> Any:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    import tandem_telemetry

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    settings = tandem_telemetry.TelemetrySettings(disabled=disabled)
    return tandem_telemetry.setup(
        "bench-micro",
        settings=settings,
        span_processor=BatchSpanProcessor(Drop()),
        metric_reader=InMemoryMetricReader(),
    )


async def _best(call: Any, quick: bool) -> float:
    """Best µs per call over batches of calls, after a warm-up; `quick`: a few, for a smoke run."""
    batches, per_batch, warmup = (2, 200, 20) if quick else (7, 3000, 500)
    for _ in range(warmup):
        await call()
    best = float("inf")
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(per_batch):
            await call()
        best = min(best, (time.perf_counter() - start) / per_batch)
    return best * 1e6


async def _server(case: str, quick: bool) -> float:
    from benchmarks import apps

    if case == "server-untraced":
        app = apps.build_untraced()
    else:
        _pipeline(disabled=case.startswith("server-disabled"))
        app = apps.build_tandem()
    caller = [
        (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        (b"baggage", b"tenant=acme"),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/hello",
        "raw_path": b"/hello",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"wrk"),
            (b"accept", b"*/*"),
            *(caller if case == "server-disabled-caller" else []),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        pass

    async def call() -> None:
        await app(dict(scope), receive, send)

    return await _best(call, quick)


async def _client(case: str, quick: bool) -> float:
    import httpx

    class Canned(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_BODY)).encode()),
            ]
            return httpx.Response(200, headers=headers, stream=httpx.ByteStream(_BODY))

    if case == "client-httpx":
        client = httpx.AsyncClient(base_url="http://127.0.0.1:8081", transport=Canned())
    else:
        from opentelemetry import trace
        from opentelemetry.context import attach

        import tandem_telemetry

        telemetry = _pipeline(disabled=case == "client-disabled")
        client = tandem_telemetry.create_client("http://127.0.0.1:8081", transport=Canned())
        # As in the gateway: the call is made inside a server span.
        attach(trace.set_span_in_context(telemetry.tracer.start_span("GET /api/work")))
    counter = iter(range(10**9))

    async def call() -> None:
        response = await client.post("/tasks", json={"task": next(counter)})
        response.json()

    return await _best(call, quick)


def _export() -> dict[str, float]:
    """OTLP encoding cost per span, for a server span and a client span as Tandem makes them: the
    SDK's encoder (build the protobuf objects, serialize) and Tandem's (tandem_telemetry.fastpath,
    straight to bytes)."""
    from opentelemetry.context import Context
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
        encode_spans as sdk_encode_spans,
    )
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    import tandem_telemetry
    from tandem_telemetry.fastpath import encode_spans

    memory = InMemorySpanExporter()
    telemetry = tandem_telemetry.setup(
        "bench-micro",
        span_processor=SimpleSpanProcessor(memory),
        metric_reader=InMemoryMetricReader(),
    )
    server: dict[str, AttributeValue] = {
        "http.request.method": "GET",
        "url.path": "/hello",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "server.address": "127.0.0.1",
        "server.port": 8000,
        "client.address": "127.0.0.1",
        "user_agent.original": "wrk",
    }
    client: dict[str, AttributeValue] = {
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": 8081,
        "url.full": "http://127.0.0.1:8081/tasks",
    }
    encoders = {
        "sdk": lambda spans: sdk_encode_spans(spans).SerializeToString(),
        "tandem": encode_spans,
    }
    server_end: dict[str, AttributeValue] = {
        "http.response.status_code": 200,
        "http.route": "/hello",
    }
    client_end: dict[str, AttributeValue] = {"http.response.status_code": 200}
    results = {}
    for name, kind, attributes, end in (
        ("server span", SpanKind.SERVER, server, server_end),
        ("client span", SpanKind.CLIENT, client, client_end),
    ):
        memory.clear()
        for _ in range(512):
            span = telemetry.tracer.start_span("GET", Context(), kind, attributes)
            span.set_attributes(end)
            span.end()
        spans = memory.get_finished_spans()
        for encoder, encode in encoders.items():
            best = float("inf")
            for _ in range(10):
                start = time.perf_counter()
                encode(spans)
                best = min(best, time.perf_counter() - start)
            results[f"{encoder} encoder, {name}"] = best / len(spans) * 1e6
    return results


def _sdk(quick: bool) -> dict[str, float]:
    """A server span like the middleware's (start, 2 outcome attributes, end) and one duration
    record: through the SDK's Tracer and Histogram, and Tandem's RequestTracer and
    DurationHistogram."""
    import timeit

    from opentelemetry import trace
    from opentelemetry.context import Context, attach
    from opentelemetry.trace import SpanKind

    telemetry = _pipeline()
    start = {
        "http.request.method": "GET",
        "url.path": "/hello",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "server.address": "127.0.0.1",
        "server.port": 8000,
        "client.address": "127.0.0.1",
        "user_agent.original": "wrk",
    }
    outcome = {"http.response.status_code": 200, "http.route": "/hello"}
    metric = {
        "http.request.method": "GET",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        **outcome,
    }
    tracer, sdk_tracer = telemetry.tracer, telemetry.tracer._tracer
    sdk_histogram = telemetry.server_duration._histogram

    def sdk_span() -> None:
        s = sdk_tracer.start_span("GET", Context(), SpanKind.SERVER, start)
        s.set_attributes(outcome)
        s.end()

    def request_span() -> None:
        s = tracer.start_span("GET", Context(), SpanKind.SERVER, dict(start))
        s.set_attributes(outcome)
        s.end()

    # As in the middleware: the measurement is taken inside the request's (sampled) span.
    attach(trace.set_span_in_context(tracer.start_span("GET /hello", Context(), SpanKind.SERVER)))
    number, repeat = (200, 2) if quick else (20000, 5)

    def per_call(call: Any) -> float:
        return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6

    return {
        "sdk span": per_call(sdk_span),
        "request span": per_call(request_span),
        "sdk histogram": per_call(lambda: sdk_histogram.record(0.001, metric)),
        "duration histogram": per_call(lambda: telemetry.server_duration.record(0.001, metric)),
    }


def run_case(case: str, quick: bool = False) -> dict[str, float]:
    if case == "export":
        return _export()
    if case == "sdk":
        return _sdk(quick)
    import uvloop

    coroutine = _server(case, quick) if case in SERVER_CASES else _client(case, quick)
    return {case: uvloop.run(coroutine)}


def run_in_process(case: str, quick: bool) -> dict[str, float]:
    """One case in a fresh process (the telemetry pipeline is per process): µs per name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TANDEM_"))}
    command = [sys.executable, "-m", "benchmarks.micro", case, *(["--quick"] if quick else [])]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"micro-benchmark {case} failed:\n{done.stderr}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def run_all(quick: bool = False, cases: tuple[str, ...] = CASES) -> dict[str, float]:
    """Every case (or those named) once."""
    return {name: us for case in cases for name, us in run_in_process(case, quick).items()}


def measure(size_name: str, generator: str, logdir: Path) -> dict[str, Any]:
    """Every case once per round, the order rotating: µs per name, with its round and group.
    It needs no load generator and no processes' logs."""
    cases, quick, rounds = SIZES[size_name]
    rows = []
    for r in range(rounds):
        log(f"micro: round {r + 1}/{rounds}")
        for case in rotated(list(cases), r):
            for name, us in run_in_process(case, quick).items():
                rows.append({"round": r, "name": name, "group": ROWS[name][1], "us": us})
    return {"rounds": rounds, "cases": rows, "ratios": RATIOS}


# Section 6's rows: what each figure is and the group it is compared within, in the order shown.
ROWS = {
    "server-untraced": ("Trivial app, no middleware", "server"),
    "server-disabled": ("Trivial app, Tandem's middleware, OTEL_SDK_DISABLED", "server"),
    "server-disabled-caller": (
        "The same, the request carrying a traceparent and baggage, which stay current (and go "
        "on in traceresponse)",
        "server",
    ),
    "server-traced": ("Trivial app, Tandem's middleware, traced", "server"),
    "request span": (
        "— of that, the server span through Tandem's RequestTracer (start, 2 outcome "
        "attributes, end)",
        "span",
    ),
    "duration histogram": (
        "— of that, the duration record through Tandem's DurationHistogram",
        "histogram",
    ),
    "sdk span": (
        "The same server span through the SDK's Tracer.start_span, for comparison",
        "span",
    ),
    "sdk histogram": (
        "The same duration record through the SDK's Histogram.record, for comparison",
        "histogram",
    ),
    "tandem encoder, server span": (
        "OTLP encoding of one such server span, Tandem's encoder (processor thread)",
        "server encoding",
    ),
    "sdk encoder, server span": (
        "OTLP encoding of one such server span, the SDK's encoder, for comparison",
        "server encoding",
    ),
    "client-httpx": ("httpx.AsyncClient, POST JSON + read JSON, canned transport", "client"),
    "client-disabled": ("Tandem's create_client, same call, OTEL_SDK_DISABLED", "client"),
    "client-traced": ("Tandem's create_client, same call, traced", "client"),
    "tandem encoder, client span": (
        "OTLP encoding of one client span, Tandem's encoder",
        "client encoding",
    ),
    "sdk encoder, client span": (
        "OTLP encoding of one client span, the SDK's encoder, for comparison",
        "client encoding",
    ),
}
# The ratios this section stands by, per round: each figure to the baseline of its group
# (benchmarks.compare reads them).
BASELINES = ["server-untraced", "client-httpx", "sdk span", "sdk histogram"]
BASELINES += ["sdk encoder, server span", "sdk encoder, client span"]
RATIOS = [
    {"rows": "cases", "by": "name", "to": to, "value": "us", "within": "group"} for to in BASELINES
]
# What the paragraph under the table sets against section 1's untraced request.
BUDGET = {"server-untraced", "server-traced", "sdk span", "sdk histogram"}
BUDGET |= {"sdk encoder, server span", "tandem encoder, server span"}


def report(data: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    figures = {
        name: spread([row["us"] for row in data["cases"] if row["name"] == name])
        for name in ROWS
        if any(row["name"] == name for row in data["cases"])
    }
    micro = {name: values["median"] for name, values in figures.items()}
    own = data.get("run")
    when = (
        f"measured by `{own['command']}` on {own['machine']['date']}, apart from the other sections"
        if own
        else "run at the end of the same run"
    )
    body = [
        heading("6. Where the time goes, in-process"),
        text(
            f"`python -m benchmarks.micro` (benchmarks/micro.py), {when}: the request path called "
            f"directly, no network, µs per request. {data['rounds']} round(s), the order rotating, "
            "each case in a fresh process taking the best of 7 batches. Spans go through the "
            "SDK's BatchSpanProcessor to an exporter that drops them; the OTLP encoding rows are "
            "what the real exporter then spends per span, on the processor's thread of the same "
            "process."
        ),
        table(
            ["Path", "µs, median [min–max]"],
            [[ROWS[name][0], shown(values, "{:.1f}")] for name, values in figures.items()],
        ),
    ]
    trivial = results["sections"].get("harness", {}).get("trivial", [])
    untraced = [row["rps"] for row in trivial if row["variant"] == "untraced"]
    if untraced and micro.keys() >= BUDGET:
        untraced_rps = statistics.median(untraced)
        served = 1e6 / untraced_rps
        sdk_floor = micro["sdk span"] + micro["sdk histogram"] + micro["sdk encoder, server span"]
        request_path = micro["server-traced"] - micro["server-untraced"]
        encoding = micro["tandem encoder, server span"]
        actual = request_path + encoding
        body.append(
            text(
                f"(a) served a request in {served:.0f} µs of its process's time "
                f"({untraced_rps:.0f} req/s). Tracing adds {actual:.0f} µs to that in the same "
                f"process ({request_path:.0f} on the request path, {encoding:.0f} encoding the "
                f"span), which alone would put (b) at about {served / (served + actual):.2f} × "
                "(a). The SDK's generic span, histogram and encoder alone are "
                f"{sdk_floor:.0f} µs: a middleware with no code of its own, making the same span "
                "and metric through them, would be bounded at about "
                f"{served / (served + sdk_floor):.2f} × (a). On the loaded machine every one of "
                "these costs is higher than here, alone in a loop (section 1 shows by how much)."
            )
        )
    return {"order": 6, "body": body}


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    args = [a for a in argv if a != "--quick"]
    if args and args[0] != "--json":
        print(json.dumps(run_case(args[0], quick)))
        return 0
    results = run_all(quick)
    if args:
        print(json.dumps(results))
        return 0
    print("µs per request, best of 7 batches:")
    for name, value in results.items():
        print(f"  {name:16} {value:7.1f}")
    print(
        f"  server: tracing adds {results['server-traced'] - results['server-untraced']:.1f} µs "
        "per request"
    )
    print(
        f"  client: tracing adds {results['client-traced'] - results['client-disabled']:.1f} µs "
        f"per call, Tandem's client {results['client-traced'] - results['client-httpx']:+.1f} µs "
        "against plain httpx"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
