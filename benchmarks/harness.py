"""Sections 1-5 of `make bench`: the traced path, interleaved, several rounds each.

What runs, all on loopback, each service a real process started through
tandem_localstack.Stack and served like the services
(tandem_service.serving: hypercorn, uvloop, one process):

1. Trivial route, GET /hello on one Starlette app in four variants
   (benchmarks.apps): (a) untraced, (b) Tandem's middleware, (c) contrib ASGI
   middleware, (d) Starlette's own OpenTelemetryMiddleware. (b)-(d) sample
   100% and export through the SDK's BatchSpanProcessor and OTLP/gRPC
   exporter to the local collector, a separate process.
2. Full path, GET /api/work?tasks=2 through gateway -> worker -> gateway:
   the real services traced, the same with OTEL_SDK_DISABLED=true, and the
   services' handlers wired with the contrib ASGI and httpx instrumentations
   (benchmarks.contrib_services).
3. The hop: one client process, 32 requests in flight, POST /tasks, through
   Tandem's create_client (tracing on and off), raw aiohttp, httpx's
   default transport, and two floors (one bare SDK span per call around raw
   aiohttp, and around Tandem's client with its own tracing off); against a
   worker stand-in served like the worker (the target's basis) and against
   a raw-socket server that costs nothing (the clients' own cost, in
   isolation).
4. Span delivery: fresh collector and services, the full path for 60 s at
   the rate wrk drives with the full-path settings; spans received by the
   collector against 1 + 6N per request the gateway served.
5. Memory: VmRSS of the gateway and the worker before and after that run.

Sections 1-3 are interleaved: each round measures every variant of every
section once, the order rotating from round to round, so that drift on a
shared machine falls on all variants alike. Ratios are taken within a round
(variant / baseline of the same round); the report gives their median and
min-max over the rounds.

A section of `python -m benchmarks` (benchmarks/__main__.py): `measure` returns what it
measured, raw, with its labels, targets and ratios; benchmarks.render writes the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import loadgen
from benchmarks.measuring import (
    SMOKE_EXPORT,
    TELEMETRY_ENV,
    Processes,
    log,
    pythonpath,
    quiet_for,
    rotated,
    rss_kib,
    settled,
)
from tandem_collector.ports import free_ports
from tandem_localstack import Collector
from tandem_tracecheck.prometheus import scrape

SECTION = "harness"
TASKS = 2
SPANS_PER_REQUEST = 1 + 6 * TASKS

# Sections 1-5 measure the traced path, not overload: their 32 connections of tasks=2 would
# pass the services' default admission limit, so it is off there. Section 7 measures it.
NO_ADMISSION_LIMIT = {"MAX_IN_FLIGHT": "0"}

# The public API path (TANDEM_FAST_PATH=off) beside the default (auto: the fast path on the
# lock's SDK).
PUBLIC_PATH = {"TANDEM_FAST_PATH": "off"}

TRIVIAL_VARIANTS = {
    "untraced": "(a) no tracing middleware",
    "tandem": "(b) Tandem's TracingMiddleware",
    "tandem_public": (
        "(b′) Tandem's TracingMiddleware on the public API path (TANDEM_FAST_PATH=off)"
    ),
    "contrib": "(c) contrib ASGI middleware, exclude_spans send/receive",
    "starlette": "(d) Starlette's OpenTelemetryMiddleware",
    "floor_sdk": (
        "(e) floor: one bare span per request through the SDK's Tracer; no attributes, context, "
        "metric or header"
    ),
    "floor_tandem": "(f) floor: the same bare span through Tandem's RequestTracer",
}
# Variants that run another's app with PUBLIC_PATH: variant -> the app (or client) they share.
ON_THE_PUBLIC_PATH = {"tandem_public": "tandem", "traced_public": "traced"}

FULL_VARIANTS = {
    "traced": "Tandem, traced",
    "traced_public": "Tandem, traced, public API path (TANDEM_FAST_PATH=off)",
    "disabled": "Tandem, OTEL_SDK_DISABLED=true",
    "contrib": "contrib ASGI + httpx instrumentations",
}
HOP_CLIENTS = {
    "tandem": "Tandem's create_client, traced",
    "tandem_public": "Tandem's create_client, traced, public API path (TANDEM_FAST_PATH=off)",
    "tandem_untraced": "Tandem's create_client, OTEL_SDK_DISABLED",
    "aiohttp": "raw aiohttp",
    "httpx": "httpx, default transport",
    "aiohttp_span": "floor: raw aiohttp + one bare span per call through the SDK's Tracer",
    "tandem_bare_span": (
        "floor: Tandem's client, its tracing off, + one bare span per call through Tandem's "
        "RequestTracer"
    ),
}
HOP_SERVERS = {
    "worker": "worker stand-in (Starlette on hypercorn, like the worker)",
    "raw": "raw-socket server (the clients' own cost)",
}
LABELS = {
    "trivial": TRIVIAL_VARIANTS,
    "full": FULL_VARIANTS,
    "hop_client": HOP_CLIENTS,
    "hop_server": HOP_SERVERS,
}
# The ratios this section stands by, each per round: rows of `rows` by `by`, each to the row
# of the same round (and `within` group) whose `by` is `to`. benchmarks.compare reads them.
RATIOS = [
    {"rows": "trivial", "by": "variant", "to": "untraced", "value": "rps"},
    {"rows": "full", "by": "variant", "to": "disabled", "value": "rps"},
    {"rows": "full", "by": "variant", "to": "contrib", "value": "rps"},
    {"rows": "hop", "by": "client", "to": "aiohttp", "value": "rps", "within": "server"},
]
# A tutorial-style version of the full path (hypercorn CLI defaults, httpx's default
# transport, a start_as_current_span middleware) served 110 req/s on this machine in an
# earlier measurement; this harness does not run it.
TUTORIAL_RPS = 110.0
TARGETS = {
    "trivial": 0.85,
    "full_vs_disabled": 0.80,
    "full_vs_contrib": 1.5,
    "full_vs_tutorial": 4.0,
    "hop": 0.75,
    "delivery": 1.0,
}


@dataclass(frozen=True)
class Size:
    name: str
    rounds: int
    trivial_seconds: float
    full_seconds: float
    hop_seconds: float
    hop_warmup: float
    warmup_seconds: float  # per variant, before the first round; 0: none
    delivery_seconds: float
    pause: float
    settle_timeout: float
    export_overrides: tuple[tuple[str, str], ...] = ()
    # What is measured: every variant and client unless a size names fewer.
    trivial_variants: tuple[str, ...] = tuple(TRIVIAL_VARIANTS)
    full_variants: tuple[str, ...] = tuple(FULL_VARIANTS)
    hop_servers: tuple[str, ...] = tuple(HOP_SERVERS)
    hop_clients: tuple[str, ...] = tuple(HOP_CLIENTS)
    # Section 4's warm-up, so that its "before" is a running service, not a fresh import.
    delivery_warmup: float = 1.0

    def telemetry_env(self) -> dict[str, str]:
        return {**TELEMETRY_ENV, **dict(self.export_overrides)}


SIZES = {
    # About 15 minutes on the 2-core machine: 5 rounds of (6 × 7 s + 3 × 9 s + 12 × (4 s + 1 s
    # warm-up)), the 60 s delivery run and process start-ups.
    "full": Size(
        "full",
        rounds=5,
        trivial_seconds=7,
        full_seconds=9,
        hop_seconds=4,
        hop_warmup=1.0,
        warmup_seconds=3,
        delivery_seconds=60,
        pause=0.5,
        settle_timeout=60,
        delivery_warmup=3,
    ),
    # For `make test` (tests/bench), in seconds: every section and every step (processes, the
    # load generator's parsing, span delivery, memory), on each section's baseline and Tandem's
    # own variant only.
    "smoke": Size(
        "smoke",
        rounds=1,
        trivial_seconds=1,
        full_seconds=1,
        hop_seconds=0.3,
        hop_warmup=0.1,
        warmup_seconds=0,
        delivery_seconds=1,
        pause=0.0,
        settle_timeout=30,
        export_overrides=SMOKE_EXPORT,
        trivial_variants=("untraced", "tandem"),
        full_variants=("traced", "disabled"),
        hop_servers=("worker",),
        hop_clients=("tandem", "aiohttp"),
        delivery_warmup=0.0,
    ),
}


@dataclass(frozen=True)
class Load:
    """wrk's shape for each section: threads and connections."""

    trivial_threads: int = 1
    trivial_connections: int = 32
    full_threads: int = 1
    full_connections: int = 32
    hop_concurrency: int = 32


def hop_client(
    kind: str, url: str, collector: Collector, size: Size, concurrency: int
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TANDEM_"))}
    env.update(size.telemetry_env())
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.grpc_endpoint
    env["PYTHONPATH"] = pythonpath()
    if kind == "tandem_untraced":
        kind, env["OTEL_SDK_DISABLED"] = "tandem", "true"
    elif kind in ON_THE_PUBLIC_PATH:
        kind = ON_THE_PUBLIC_PATH[kind]
        env.update(PUBLIC_PATH)
    command = [
        *(sys.executable, "-m", "benchmarks.hop", "client", "--kind", kind, "--url", url),
        *("--concurrency", str(concurrency), "--seconds", str(size.hop_seconds)),
        *("--warmup", str(size.hop_warmup)),
    ]
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=size.hop_seconds + size.hop_warmup + 60,
        check=False,  # a failure shows as the missing HOP_JSON line below
    )
    for line in done.stdout.splitlines():
        if line.startswith("HOP_JSON "):
            return json.loads(line[len("HOP_JSON ") :])
    raise RuntimeError(
        f"hop client {kind} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    )


def measure(size_name: str, generator: str, logdir: Path) -> dict[str, Any]:
    size, load = SIZES[size_name], Load()
    began = time.monotonic()
    procs = Processes(logdir, size.telemetry_env())
    rows: dict[str, list[dict[str, Any]]] = {"trivial": [], "full": [], "hop": []}

    def drive(url: str, seconds: float, threads: int, connections: int) -> loadgen.LoadResult:
        return loadgen.run_load(
            url, seconds, generator=generator, threads=threads, connections=connections
        )

    try:
        log("starting the collector and every variant")
        collector = procs.collector()
        trivial_urls: dict[str, str] = {}
        trivial_ports = free_ports(len(size.trivial_variants))
        for variant, port in zip(size.trivial_variants, trivial_ports, strict=True):
            app = ON_THE_PUBLIC_PATH.get(variant, variant)
            extra = PUBLIC_PATH if variant in ON_THE_PUBLIC_PATH else {}
            procs.service(
                f"trivial-{variant}",
                "benchmarks.serve",
                port,
                collector,
                {"BENCH_APP": f"benchmarks.apps:{app}", **extra},
            )
            trivial_urls[variant] = f"http://127.0.0.1:{port}/hello"
        full_urls: dict[str, str] = {}
        for variant in size.full_variants:
            extra = (
                {"OTEL_SDK_DISABLED": "true"}
                if variant == "disabled"
                else PUBLIC_PATH
                if variant in ON_THE_PUBLIC_PATH
                else {}
            )
            contrib = "benchmarks.contrib_services" if variant == "contrib" else ""
            _, _, port = procs.pair(
                variant, collector, {**NO_ADMISSION_LIMIT, **extra}, gateway_app=contrib
            )
            full_urls[variant] = f"http://127.0.0.1:{port}/api/work?tasks={TASKS}"
        hop_urls: dict[str, str] = {}
        hop_port, raw_port = free_ports(2)
        if "worker" in size.hop_servers:
            procs.service(
                "hop-worker",
                "benchmarks.serve",
                hop_port,
                collector,
                {"BENCH_APP": "benchmarks.apps:hop_worker"},
            )
            hop_urls["worker"] = f"http://127.0.0.1:{hop_port}"
        if "raw" in size.hop_servers:
            raw = procs.stack.start(
                "hop-raw",
                "benchmarks.hop",
                {"PYTHONPATH": pythonpath()},
                ("server", "--port", str(raw_port)),
            )
            procs.expect_ready(raw, f"http://127.0.0.1:{raw_port}/readyz")
            hop_urls["raw"] = f"http://127.0.0.1:{raw_port}"
        procs.wait_ready()

        if size.warmup_seconds:
            log("warming up")
            for url in trivial_urls.values():
                drive(url, size.warmup_seconds, load.trivial_threads, load.trivial_connections)
            for url in full_urls.values():
                drive(url, size.warmup_seconds, load.full_threads, load.full_connections)

        for r in range(size.rounds):
            for section, urls, seconds, threads, connections in (
                ("trivial", trivial_urls, size.trivial_seconds, load.trivial_threads,
                 load.trivial_connections),
                ("full", full_urls, size.full_seconds, load.full_threads, load.full_connections),
            ):  # fmt: skip
                log(f"round {r + 1}/{size.rounds}: {section}")
                for variant in rotated(list(urls), r):
                    result = drive(urls[variant], seconds, threads, connections)
                    rows[section].append({"round": r, "variant": variant, **result.to_dict()})
                    log(
                        f"  {variant:10} {result.rps:8.0f} req/s  p50 {result.p50_ms:.1f} ms  "
                        f"p99 {result.p99_ms:.1f} ms  errors {result.errors}"
                    )
                    time.sleep(size.pause)
            log(f"round {r + 1}/{size.rounds}: hop")
            for server in size.hop_servers:
                for kind in rotated(list(size.hop_clients), r):
                    hop = hop_client(kind, hop_urls[server], collector, size, load.hop_concurrency)
                    rows["hop"].append({"round": r, "server": server, **hop, "client": kind})
                    log(f"  {server:6} {kind:8} {hop['rps']:8.0f} req/s  errors {hop['errors']}")
                    time.sleep(size.pause)

        log("stopping sections 1-3")
        procs.stop_all()
        delivery = measure_delivery(procs, size, load, drive)
    finally:
        procs.stop_all()
    return {
        "size": asdict(size),
        "load": asdict(load),
        "telemetry_env": size.telemetry_env(),
        "service_env": NO_ADMISSION_LIMIT,
        "tasks": TASKS,
        "spans_per_request": SPANS_PER_REQUEST,
        "labels": LABELS,
        "targets": TARGETS,
        "tutorial_rps": TUTORIAL_RPS,
        "ratios": RATIOS,
        **rows,
        "delivery": delivery,
        "seconds": time.monotonic() - began,
    }


def delivery_counters(metrics_url: str) -> dict[str, float]:
    """The numbers section 4 needs from the collector's /metrics page."""
    values = dict.fromkeys(
        ("spans_received", "work_requests", "work_requests_ok", "spans_lost_reported"), 0.0
    )
    for name, labels, value in scrape(metrics_url):
        if name == "tandem_collector_spans_received_total":
            values["spans_received"] += value
        elif (
            name == "http_server_request_duration_seconds_count"
            and labels.get("http_route") == "/api/work"
            and labels.get("job") == "tandem/gateway"
        ):
            values["work_requests"] += value
            if labels.get("http_response_status_code") == "200":
                values["work_requests_ok"] += value
        elif name.startswith("tandem_telemetry_spans_lost"):
            values["spans_lost_reported"] += value
    return values


def measure_delivery(procs: Processes, size: Size, load: Load, drive: Any) -> dict[str, Any]:
    """Sections 4 and 5: fresh collector and services, the full path for `delivery_seconds`."""
    log(
        f"span delivery: fresh collector and services, {size.delivery_seconds:.0f} s at the "
        "full-path load"
    )
    collector = procs.collector("collector-delivery")
    gateway, worker, port = procs.pair("delivery", collector, NO_ADMISSION_LIMIT)
    procs.wait_ready()
    url = f"http://127.0.0.1:{port}/api/work?tasks={TASKS}"
    if size.delivery_warmup:
        # So that "before" is a running service (pools, caches), not a fresh import.
        drive(url, size.delivery_warmup, load.full_threads, load.full_connections)
    env = size.telemetry_env()

    def counters() -> dict[str, float]:
        return settled(
            lambda: delivery_counters(collector.metrics_url),
            quiet_for(env),
            size.settle_timeout,
            "span delivery",
        )

    def rss() -> dict[str, int]:
        return {"gateway": rss_kib(gateway.popen.pid), "worker": rss_kib(worker.popen.pid)}

    before = counters()
    rss_before = rss()
    result = drive(url, size.delivery_seconds, load.full_threads, load.full_connections)
    rss_end = rss()
    after = counters()
    rss_settled = rss()
    served = after["work_requests"] - before["work_requests"]
    received = after["spans_received"] - before["spans_received"]
    expected = served * SPANS_PER_REQUEST
    delivery = {
        "seconds": result.seconds,
        "rps": result.rps,
        "wrk_requests": result.requests,
        "wrk_errors": result.errors,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "served": served,
        "served_ok": after["work_requests_ok"] - before["work_requests_ok"],
        "spans_expected": expected,
        "spans_received": received,
        "ratio": received / expected if expected else 0.0,
        "spans_lost_reported": after["spans_lost_reported"] - before["spans_lost_reported"],
        "rss_kib": {"before": rss_before, "end_of_run": rss_end, "settled": rss_settled},
        "bsp_settings": {k: v for k, v in env.items() if k.startswith("OTEL_BSP_")},
    }
    log(
        f"  {result.rps:.0f} req/s; served {served:.0f}; spans {received:.0f} of "
        f"{expected:.0f} = {delivery['ratio']:.6f}"
    )
    log(f"  RSS KiB before {rss_before}, end {rss_end}, settled {rss_settled}")
    procs.stop([gateway, worker])
    procs.stop([p for p in procs.stack.processes if p.name == "collector-delivery"])
    return delivery
