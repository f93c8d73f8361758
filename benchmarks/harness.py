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
measured, raw, with its labels, targets and ratios; `report` makes this section's part of the
document from those figures, which benchmarks.render lays out.
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
from benchmarks.results import (
    Block,
    heading,
    met,
    paired_ratios,
    shown,
    shown_ratio,
    spread,
    table,
    text,
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
    # About 17 minutes on the 2-core machine: 5 rounds of (6 × 7 s + 3 × 9 s + 12 × (4 s + 1 s
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


# --- The report: sections 1-5 and the targets, from the figures above -------------------------

CHART = "benchmarks.png"
# Chart labels and colours, keyed like LABELS.
SHORT = {
    "trivial": {
        "untraced": ("(a) untraced", "#999999"),
        "tandem": ("(b) Tandem", "#2a7ab9"),
        "tandem_public": ("(b′) Tandem,\npublic path", "#6baed6"),
        "contrib": ("(c) contrib", "#d98c2b"),
        "starlette": ("(d) Starlette", "#8c6bb1"),
        "floor_sdk": ("(e) bare SDK span", "#cccccc"),
        "floor_tandem": ("(f) bare span,\nRequestTracer", "#a9c9e4"),
    },
    "full": {
        "traced": ("traced", "#2a7ab9"),
        "traced_public": ("traced,\npublic path", "#6baed6"),
        "disabled": ("OTEL_SDK_DISABLED", "#999999"),
        "contrib": ("contrib ASGI+httpx", "#d98c2b"),
    },
    "hop_client": {
        "tandem": ("Tandem, traced", "#2a7ab9"),
        "tandem_public": ("Tandem, traced,\npublic path", "#6baed6"),
        "tandem_untraced": ("Tandem, SDK off", "#7fb3dd"),
        "aiohttp": ("raw aiohttp", "#999999"),
        "httpx": ("httpx default", "#d98c2b"),
        "aiohttp_span": ("aiohttp +\nbare SDK span", "#cccccc"),
        "tandem_bare_span": ("Tandem, SDK off\n+ bare SDK span", "#c6dbef"),
    },
}


def summarize(h: dict[str, Any]) -> dict[str, Any]:
    """Sections 1-3: medians [min–max] and per-round ratios, from the raw rows."""

    def measured(rows: list[dict[str, Any]], key: str, names: dict[str, str]) -> list[str]:
        present = {row[key] for row in rows}  # a smaller size measures fewer
        return [name for name in names if name in present]

    def totals(rows: list[dict[str, Any]], **more: list[float]) -> dict[str, Any]:
        return {
            "rps": spread([r["rps"] for r in rows]),
            "errors": sum(r["errors"] for r in rows),
            "requests": sum(r["requests"] for r in rows),
            **{name: spread(values) for name, values in more.items()},
        }

    labels = h["labels"]
    summary: dict[str, dict[str, Any]] = {"trivial": {}, "full": {}, "hop": {}}
    for variant in measured(h["trivial"], "variant", labels["trivial"]):
        rows = [r for r in h["trivial"] if r["variant"] == variant]
        ratio = paired_ratios(h["trivial"], "variant", variant, "untraced")
        summary["trivial"][variant] = totals(rows, ratio=ratio)
    for variant in measured(h["full"], "variant", labels["full"]):
        rows = [r for r in h["full"] if r["variant"] == variant]
        summary["full"][variant] = totals(
            rows,
            p50_ms=[r["p50_ms"] for r in rows],
            p99_ms=[r["p99_ms"] for r in rows],
            ratio_to_disabled=paired_ratios(h["full"], "variant", variant, "disabled"),
            ratio_to_contrib=paired_ratios(h["full"], "variant", variant, "contrib"),
        )
    for server in measured(h["hop"], "server", labels["hop_server"]):
        rows = [r for r in h["hop"] if r["server"] == server]
        summary["hop"][server] = {
            kind: totals(
                [r for r in rows if r["client"] == kind],
                ratio=paired_ratios(rows, "client", kind, "aiohttp"),
            )
            for kind in measured(rows, "client", labels["hop_client"])
        }
    return summary


def report(h: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    s = summarize(h)
    size, load, d = h["size"], h["load"], h["delivery"]
    tasks, labels, tutorial_rps = h["tasks"], h["labels"], h["tutorial_rps"]
    body = [
        text(
            f"Sections 1–5 and [{CHART}]({CHART}): {size['name']} size, {size['rounds']} "
            "interleaved rounds."
        )
    ]
    if (len(s["trivial"]), len(s["full"])) != (len(labels["trivial"]), len(labels["full"])):
        body.append(
            text(
                f"> **A subset**: the {size['name']} size measures some of the variants below; "
                "`make bench` measures all of them."
            )
        )
    body += [
        heading("Against the targets"),
        table(["Measure", "Target", "Measured, median [min–max]", ""], target_rows(h, s)),
        *floor_blocks(h, s),
        *path_blocks(s),
        heading("1. Middleware overhead on a trivial route"),
        text(
            "`GET /hello` on one Starlette app, served like the services (hypercorn, uvloop, one "
            f"process). wrk -t{load['trivial_threads']} -c{load['trivial_connections']}, "
            f"{size['trivial_seconds']:.0f} s per measurement. (b)–(f) sample 100% and export "
            "through the SDK's BatchSpanProcessor and OTLP/gRPC exporter to the collector, a "
            "separate process. Ratios are per round, to (a) of the same round."
        ),
        table(
            ["Variant", "req/s", "ratio to (a)", "requests", "errors"],
            [
                [
                    labels["trivial"][v],
                    shown(r["rps"]),
                    shown_ratio(r["ratio"]),
                    r["requests"],
                    r["errors"],
                ]
                for v, r in s["trivial"].items()
            ],
        ),
        heading("2. The full path"),
        text(
            f"`GET /api/work?tasks={tasks}`: gateway → {tasks} × worker → gateway (quota), "
            f"{h['spans_per_request']} spans per request when traced. wrk "
            f"-t{load['full_threads']} -c{load['full_connections']}, "
            f"{size['full_seconds']:.0f} s per measurement."
        ),
        table(
            [
                "Variant",
                "req/s",
                "p50 ms",
                "p99 ms",
                "ratio to disabled",
                "ratio to contrib",
                "requests",
                "errors",
            ],
            [
                [
                    labels["full"][v],
                    shown(r["rps"]),
                    shown(r["p50_ms"], "{:.1f}"),
                    shown(r["p99_ms"], "{:.1f}"),
                    shown_ratio(r["ratio_to_disabled"]),
                    shown_ratio(r["ratio_to_contrib"]),
                    r["requests"],
                    r["errors"],
                ]
                for v, r in s["full"].items()
            ],
        ),
        text(
            f"Against a tutorial-style setup measured earlier ({tutorial_rps:.0f} req/s on this "
            "machine; hypercorn CLI defaults, httpx default transport, a start_as_current_span "
            "middleware; not re-measured here): "
            f"{s['full']['traced']['rps']['median'] / tutorial_rps:.1f} ×. The contrib row above "
            "is the closest measured relative of it."
        ),
        heading("3. The hop"),
        text(
            f"One client process, {load['hop_concurrency']} requests in flight, `POST /tasks` "
            f"with a JSON body, the JSON answer parsed; {size['hop_seconds']:g} s per "
            f"measurement after {size['hop_warmup']:g} s of warm-up, uvloop. Tandem's client is "
            "`tandem_telemetry.create_client` as the gateway uses it (httpx over httpx-aiohttp, "
            "retries, total timeout), traced and exporting to the collector, and once more with "
            "OTEL_SDK_DISABLED=true to separate the cost of tracing from the cost of the client."
        ),
        table(
            ["Server", "Client", "req/s", "ratio to raw aiohttp", "requests", "errors"],
            [
                [
                    labels["hop_server"][server],
                    labels["hop_client"][kind],
                    shown(r["rps"]),
                    shown_ratio(r["ratio"]),
                    r["requests"],
                    r["errors"],
                ]
                for server, clients in s["hop"].items()
                for kind, r in clients.items()
            ],
        ),
    ]
    worker = s["hop"]["worker"]
    if worker.get("tandem_untraced", {}).get("rps", {}).get("median"):
        traced, untraced = worker["tandem"]["rps"]["median"], worker["tandem_untraced"]["rps"]
        body.append(
            text(
                "Against the worker stand-in, tracing (a CLIENT span, its duration metric and the "
                "span's export, all in the client's process) takes the client from "
                f"{untraced['median']:.0f} to {traced:.0f} req/s "
                f"({traced / untraced['median']:.2f} ×)."
            )
        )
    rss, (low, high) = d["rss_kib"], delivery_bounds(d, h["spans_per_request"])
    expected, received = f"{d['spans_expected']:.0f}", f"**{d['ratio']:.6f}**"
    if low != high:
        cut = d["served"] - d["served_ok"]
        expected = (
            f"{low - cut:.0f} for the requests answered 200, and 1 to {h['spans_per_request']} for "
            f"each of the {cut:.0f} cut by wrk's stop: {low}–{high}"
        )
        within = low <= d["spans_received"] <= high
        received = f"**{'within' if within else 'outside'} {low}–{high}**"
    body += [
        heading("4. Span delivery"),
        text(
            f"Fresh collector, gateway and worker; the full path at wrk -t{load['full_threads']} "
            f"-c{load['full_connections']} (the load that gives section 2 its highest rate) for "
            f"{d['seconds']:.0f} s. Expected spans are {h['spans_per_request']} (1 + 6N, N = "
            f"{tasks}) for every `/api/work` request the gateway served, counted by its "
            "`http.server.request.duration` histogram (a metric, independent of span export); "
            "received spans are the collector's `tandem_collector_spans_received_total`. Both "
            "are read after the counters stopped moving."
        ),
        table(
            ["", ""],
            [
                [
                    "Rate",
                    f"{d['rps']:.0f} req/s (p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms)",
                ],
                [
                    "Requests completed by wrk / served by the gateway (200) / served in all",
                    f"{d['wrk_requests']} / {d['served_ok']:.0f} / {d['served']:.0f}",
                ],
                ["Spans expected", expected],
                ["Spans received by the collector", f"{d['spans_received']:.0f}"],
                ["**Received / expected**", received],
                [
                    "Spans the SDK reported lost (`tandem.telemetry.spans.lost`)",
                    f"{d['spans_lost_reported']:.0f}",
                ],
                ["BSP settings", ", ".join(f"`{k}={v}`" for k, v in d["bsp_settings"].items())],
            ],
        ),
        text(
            "wrk stops with requests in flight. The gateway counts them too, which is why its "
            "count, not wrk's, is the denominator; their client gone, the services cancel them "
            "(error.type `client_disconnected`), each after 1 to "
            f"{h['spans_per_request']} spans, as far as it got: those requests make the expected "
            "count a range."
        ),
        heading("5. Memory"),
        text("VmRSS from /proc/<pid>/status, in MiB."),
        table(
            ["Process", "before the run", "at its end", "after the last export"],
            [
                [
                    p,
                    *(
                        f"{rss[stage][p] / 1024:.1f}"
                        for stage in ("before", "end_of_run", "settled")
                    ),
                ]
                for p in ("gateway", "worker")
            ],
        ),
    ]
    return {
        "order": 1,
        "body": body,
        "end": method_blocks(h),
        "charts": [chart(h, s, results["run"]["machine"])],
    }


def target_rows(h: dict[str, Any], s: dict[str, Any]) -> list[list[str]]:
    """Each performance target, what was measured and whether it was met (on the median)."""
    targets, tutorial_rps = h["targets"], h["tutorial_rps"]
    trivial, traced = s["trivial"]["tandem"]["ratio"], s["full"]["traced"]
    hop = s["hop"]["worker"]["tandem"]["ratio"]
    tutorial = {k: v / tutorial_rps for k, v in traced["rps"].items()}
    delivery = h["delivery"]
    rows = [
        ("Trivial route: (b) Tandem / (a) untraced", "trivial", ".2f", trivial),
        (
            "Full path: traced / OTEL_SDK_DISABLED",
            "full_vs_disabled",
            ".2f",
            traced["ratio_to_disabled"],
        ),
        (
            "Full path: traced / contrib-instrumented",
            "full_vs_contrib",
            ".1f",
            traced["ratio_to_contrib"],
        ),
        (
            f"Full path: traced req/s / {tutorial_rps:.0f} "
            "(tutorial-style setup, measured earlier)",
            "full_vs_tutorial",
            ".1f",
            tutorial,
        ),
        ("Hop: Tandem's client / raw aiohttp (worker stand-in)", "hop", ".2f", hop),
    ]
    found = [
        [label, f"≥ {targets[key]:{fmt}}", shown_ratio(value), met(value["median"] >= targets[key])]
        for label, key, fmt, value in rows
    ]
    low, high = delivery_bounds(delivery, h["spans_per_request"])
    received = delivery["spans_received"]
    found.append(
        [
            "Span delivery at the maximum sustained rate",
            "= 1.0",
            f"{delivery['ratio']:.6f}" if low == high else f"{received:,.0f} in {low:,}–{high:,}",
            met(low <= received <= high and not delivery["spans_lost_reported"]),
        ]
    )
    return found


def delivery_bounds(d: dict[str, Any], per_request: int) -> tuple[int, int]:
    """The spans section 4 expects, at least and at most. Every request answered 200 makes
    `per_request` spans; a request still in flight when wrk stopped is cancelled (its client
    left: error.type client_disconnected, no status) after making 1 (the gateway's SERVER span) to
    `per_request` of them, as far as it got."""
    cut = round(d["served"] - d["served_ok"])
    answered = round(d["served_ok"]) * per_request
    return answered + cut, answered + cut * per_request


def floor_blocks(h: dict[str, Any], s: dict[str, Any]) -> list[Block]:
    """What a bare span alone allows, measured in the same run, beside the two ratio targets it
    bounds."""
    trivial, hop, targets = s["trivial"], s["hop"]["worker"], h["targets"]
    floors = [
        (
            "(e) a middleware starting and ending one SERVER span through the SDK's "
            "`Tracer.start_span`, / (a)",
            trivial.get("floor_sdk"),
            "trivial",
        ),
        (
            "(f) the same SDK span started through Tandem's `RequestTracer`, / (a)",
            trivial.get("floor_tandem"),
            "trivial",
        ),
        (
            "raw aiohttp with one bare CLIENT span per call, / raw aiohttp (worker stand-in)",
            hop.get("aiohttp_span"),
            "hop",
        ),
        (
            "Tandem's client (httpx API) with its tracing off and one bare CLIENT span per call, "
            "started through `RequestTracer`, / raw aiohttp",
            hop.get("tandem_bare_span"),
            "hop",
        ),
    ]
    if not all(row and row["rps"]["median"] for _, row, _ in floors):
        return []  # a size that measures no floors

    def against(floor: dict[str, float], target: float) -> str:
        relation = "below" if floor["median"] < target else "at or above"
        return f"{shown_ratio(floor)}, {relation} the target of {target:.2f}"

    rows = [[label, against(row["ratio"], targets[key])] for label, row, key in floors if row]

    return [
        text(
            "**The floors.** The same run measured what one span costs when nothing else is "
            "done: no attribute, no context for the app, no metric, no propagation, no header; "
            "the span exported like the others."
        ),
        table(["Floor", "ratio, median [min–max]"], rows),
        text(
            "A floor below its target means no instrumentation built that way can meet the "
            "target on this machine, whatever else it leaves out. Sections 1 and 3 hold the rows; "
            "section 6 and the notes at the end itemise what Tandem's middleware and client add "
            "to them."
        ),
    ]


def path_blocks(s: dict[str, Any]) -> list[Block]:
    """The fast path beside the public API path (TANDEM_FAST_PATH=off), in the same rounds."""
    pairs = (
        ("Trivial route, ratio to (a)", s["trivial"], "tandem", "tandem_public", "ratio"),
        ("Full path, req/s", s["full"], "traced", "traced_public", "rps"),
        (
            "Hop (worker stand-in), ratio to raw aiohttp",
            s["hop"]["worker"],
            "tandem",
            "tandem_public",
            "ratio",
        ),
    )
    if not all(public in rows for _, rows, _, public, _ in pairs):
        return []  # a size that measures one path
    found = []
    for label, rows, fast, public, key in pairs:
        fmt = "{:.2f}" if key == "ratio" else "{:.0f}"
        base = rows[fast][key]["median"]
        ratio = rows[public][key]["median"] / base if base else 0.0
        found.append(
            [label, shown(rows[fast][key], fmt), shown(rows[public][key], fmt), f"{ratio:.2f}"]
        )
    return [
        text(
            "**Both paths.** The same rounds measured Tandem on OpenTelemetry's public API path "
            "(`TANDEM_FAST_PATH=off`: `Tracer.start_span`, `Histogram.record`, the SDK's OTLP "
            "encoder) beside the default, which on this SDK release is the fast path "
            "(`tandem_telemetry/fastpath.py`)."
        ),
        table(
            ["Measure", "fast path (auto), median [min–max]", "public path (off)", "public / fast"],
            found,
        ),
    ]


def method_blocks(h: dict[str, Any]) -> list[Block]:
    """How it was measured, and the hand-written notes: the end of the document."""
    items = [
        "- `make bench` runs `python -m benchmarks` (benchmarks/__main__.py: each section "
        "measures, benchmarks.render lays out what they wrote); `make test` runs it at a smoke "
        "size (tests/bench): every section, on its baseline and Tandem's own variant; it asserts "
        "that each measurement ran, never a timing.",
        "- One run measures everything. Sections 1–3 are interleaved: each round measures every "
        "variant of every section once, the order rotating from round to round; ratios are taken "
        "within a round.",
        "- Every traced process uses the same telemetry settings: "
        + ", ".join(f"`{k}={v}`" for k, v in h["telemetry_env"].items())
        + "; 100% sampling (the default `parentbased_always_on`). The collector runs `--quiet`.",
    ]
    if h.get("service_env") == NO_ADMISSION_LIMIT:
        items.append(
            "- Sections 1–5 run the services with `MAX_IN_FLIGHT=0`: they measure the traced "
            "path, not overload, and their 32 connections would pass the default admission limit."
        )
    items += [
        "- Services and variants are separate processes, all running for the whole of sections "
        "1–3 (idle when not measured); wrk, the services and the collector share the two cores, "
        "unpinned.",
        "- Section 3's worker stand-in is a Starlette app on hypercorn like the worker, untraced; "
        "the raw-socket server answers from a fixed buffer, so that its rows show what each "
        "client itself costs.",
    ]
    return [heading("How it was measured"), text("\n".join(items)), {"include": "NOTES.md"}]


def chart(h: dict[str, Any], s: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    """Sections 1-5 in four panels, for benchmarks.render to draw."""

    def bars(group: str, rows: dict[str, Any], key: str) -> dict[str, Any]:
        names = list(rows)
        return {
            "kind": "bars",
            "x": list(range(len(names))),
            **_heights([rows[name][key] for name in names]),
            "color": [SHORT[group][name][1] for name in names],
            "annotate": "auto",
        }

    def ticks(group: str, names: list[str]) -> list[Any]:
        return [list(range(len(names))), [SHORT[group][name][0] for name in names]]

    tutorial = h["tutorial_rps"]
    full_lines = [
        {"y": 4 * tutorial, "color": "#2a7ab9", "label": f"4 × tutorial-style ({4 * tutorial:.0f})"}
    ]
    if "disabled" in s["full"]:
        full_lines.append(
            {
                "y": 0.8 * s["full"]["disabled"]["rps"]["median"],
                "color": "#555555",
                "linestyle": ":",
                "label": "0.80 × disabled",
            }
        )
    clients = [k for k in h["labels"]["hop_client"] if any(k in r for r in s["hop"].values())]
    hop = []
    for j, (server, rows) in enumerate(s["hop"].items()):
        at = [i + (j - 0.5) * 0.38 for i, kind in enumerate(clients) if kind in rows]
        hop.append(
            {
                "kind": "bars",
                "x": at,
                **_heights([rows[kind]["rps"] for kind in clients if kind in rows]),
                "width": 0.38,
                "color": [SHORT["hop_client"][kind][1] for kind in clients if kind in rows],
                "alpha": 1.0 if server == "worker" else 0.45,
                "annotate": "{:.0f}",
            }
        )
    rss, d = h["delivery"]["rss_kib"], h["delivery"]
    low, high = delivery_bounds(d, h["spans_per_request"])
    stages = {"before": "before", "end_of_run": "end of run", "settled": "after last export"}
    memory = [
        {
            "kind": "bars",
            "x": [i + (j - 1) * 0.27 for i in range(2)],
            "y": [rss[stage]["gateway"] / 1024, rss[stage]["worker"] / 1024],
            "width": 0.27,
            "color": ["#bbbbbb", "#2a7ab9", "#7fb3dd"][j],
            "label": label,
            "annotate": "{:.0f}",
        }
        for j, (stage, label) in enumerate(stages.items())
    ]
    return {
        "file": CHART,
        "title": f"Tandem benchmarks — {machine['nproc']} × {machine['cpu']}, Python "
        f"{machine['python']}, {machine['date']} (median, bars: min–max over "
        f"{h['size']['rounds']} rounds)",
        "size": [15, 9],
        "grid": [2, 2],
        "panels": [
            {
                "title": "1. Trivial route: req/s as a ratio to (a)",
                "series": [bars("trivial", s["trivial"], "ratio")],
                "hlines": [
                    {
                        "y": h["targets"]["trivial"],
                        "color": "#2a7ab9",
                        "label": f"target for (b): {h['targets']['trivial']:.2f}",
                    }
                ],
                "xticks": ticks("trivial", list(s["trivial"])),
                "ylim": [0, 1.15],
                "legend": True,
            },
            {
                "title": f"2. Full path GET /api/work?tasks={h['tasks']}: req/s",
                "series": [bars("full", s["full"], "rps")],
                "hlines": full_lines,
                "xticks": ticks("full", list(s["full"])),
                "legend": True,
            },
            {
                "title": "3. Hop, 32 in flight: req/s (solid: worker stand-in; pale: raw-socket "
                "server)",
                "series": hop,
                "xticks": ticks("hop_client", clients),
            },
            {
                "title": f"4–5. {d['seconds']:.0f} s at {d['rps']:.0f} req/s: spans received "
                + (
                    f"/ expected = {d['ratio']:.4f}"
                    if low == high
                    else f"{d['spans_received']:,.0f}, expected {low:,}–{high:,}"
                )
                + "; RSS",
                "series": memory,
                "xticks": [[0, 1], ["gateway", "worker"]],
                "ylabel": "VmRSS, MiB",
                "legend": True,
            },
        ],
    }


def _heights(spreads: list[dict[str, float]]) -> dict[str, list[float]]:
    """A bar series' heights (medians) and the ends of its error bars (min, max)."""
    return {key: [value[name] for value in spreads] for key, name in _HEIGHTS}


_HEIGHTS = (("y", "median"), ("low", "min"), ("high", "max"))
