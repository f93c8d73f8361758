"""The benchmark run: every measurement in one run, interleaved, several rounds each.

    python -m benchmarks [--smoke] [--out DIR] [--raw FILE] [--loadgen wrk|python|auto]

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
7. Overload (benchmarks/overload.py; `make bench-overload` runs it alone):
   capacity, then 4× and 16× its connections, admission limit on and off.

Sections 1-3 are interleaved: each round measures every variant of every
section once, the order rotating from round to round, so that drift on a
shared machine falls on all variants alike. Ratios are taken within a round
(variant / baseline of the same round); the report gives their median and
min-max over the rounds.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from benchmarks import loadgen, micro
from tandem_collector.ports import free_ports
from tandem_localstack import Collector, Process, Stack, free_collector_ports, loopback_url

REPO = Path(__file__).resolve().parent.parent
TASKS = 2
SPANS_PER_REQUEST = 1 + 6 * TASKS

# The batch span processor settings for every traced process in the run
# (section 4 reports them as the settings that deliver every span).
BSP_SETTINGS = {
    "OTEL_BSP_MAX_QUEUE_SIZE": "8192",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512",
    "OTEL_BSP_SCHEDULE_DELAY": "1000",
}

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
    # Only the smoke run exports faster, so that its collector settles in a second or two.
    export_overrides: tuple[tuple[str, str], ...] = ()
    quick_micro: bool = False
    # What is measured: every variant, client and case unless a size names fewer.
    trivial_variants: tuple[str, ...] = tuple(TRIVIAL_VARIANTS)
    full_variants: tuple[str, ...] = tuple(FULL_VARIANTS)
    hop_servers: tuple[str, ...] = tuple(HOP_SERVERS)
    hop_clients: tuple[str, ...] = tuple(HOP_CLIENTS)
    micro_cases: tuple[str, ...] = micro.CASES
    # Section 4's warm-up, so that its "before" is a running service, not a fresh import.
    delivery_warmup: float = 1.0

    def telemetry_env(self) -> dict[str, str]:
        return {
            **BSP_SETTINGS,
            "OTEL_METRIC_EXPORT_INTERVAL": "5000",
            "TANDEM_FAST_PATH": "auto",
            **dict(self.export_overrides),
        }


SIZES = {
    # About 15 minutes on the 2-core machine: 5 rounds of (6 × 7 s + 3 × 9 s + 12 × (4 s + 1 s
    # warm-up)), the 60 s delivery run, process start-ups and the micro-benchmarks; then the
    # overload section (benchmarks.overload.SIZES), about 8 more.
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
    # For `make test` (tests/bench), in seconds: every section and every step of the harness
    # (processes, both load generators' parsing, ratios, span delivery, memory, micro cases,
    # the table and the chart), on each section's baseline and Tandem's own variant only.
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
        export_overrides=(
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ),
        quick_micro=True,
        trivial_variants=("untraced", "tandem"),
        full_variants=("traced", "disabled"),
        hop_servers=("worker",),
        hop_clients=("tandem", "aiohttp"),
        micro_cases=(
            "server-untraced",
            "server-disabled-caller",
            "server-traced",
            "client-traced",
            "sdk",
            "export",
        ),
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


@dataclass
class Run:
    size: Size
    generator: str
    load: Load = field(default_factory=Load)
    started: float = field(default_factory=time.time)
    machine: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    trivial: list[dict[str, Any]] = field(default_factory=list)
    full: list[dict[str, Any]] = field(default_factory=list)
    hop: list[dict[str, Any]] = field(default_factory=list)
    delivery: dict[str, Any] = field(default_factory=dict)
    overload: dict[str, Any] = field(default_factory=dict)
    micro: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": asdict(self.size),
            "generator": self.generator,
            "load": asdict(self.load),
            "started": self.started,
            "machine": self.machine,
            "command": self.command,
            "telemetry_env": self.size.telemetry_env(),
            "tasks": TASKS,
            "trivial": self.trivial,
            "full": self.full,
            "hop": self.hop,
            "delivery": self.delivery,
            "overload": self.overload,
            "micro": self.micro,
            "seconds": self.seconds,
        }


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- Machine -----------------------------------------------------------------


def machine_info(generator: str) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    from importlib import metadata

    for package in (
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-grpc",
        "opentelemetry-instrumentation-asgi",
        "opentelemetry-instrumentation-httpx",
        "starlette",
        "hypercorn",
        "httpx",
        "httpx-aiohttp",
        "aiohttp",
        "uvloop",
        "protobuf",
        "grpcio",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "-"
    wrk_version = "-"
    wrk = loadgen.wrk_path() if generator == "wrk" else None
    if wrk:
        done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (
            (done.stdout or done.stderr).splitlines()[0].strip()
            if (done.stdout or done.stderr)
            else "-"
        )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadgen": wrk_version if generator == "wrk" else "python stand-in (aiohttp), not wrk",
        "packages": versions,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# --- Processes ---------------------------------------------------------------


def pair_env(
    gateway_port: int, gateway_internal_port: int, worker_port: int
) -> tuple[dict[str, str], dict[str, str]]:
    """The gateway's and the worker's env, wired to each other: the worker checks quota on the
    gateway's internal listener."""
    gateway = {
        "INTERNAL_PORT": str(gateway_internal_port),
        "WORKER_URL": loopback_url(worker_port),
    }
    return gateway, {"GATEWAY_INTERNAL_URL": loopback_url(gateway_internal_port)}


class Processes:
    """A Stack plus the bookkeeping the harness needs: start many, then wait for all."""

    def __init__(self, logdir: Path, telemetry_env: dict[str, str]) -> None:
        self.stack = Stack(logdir)
        self.telemetry_env = telemetry_env
        self._pending: list[tuple[Process, str]] = []

    def collector(self, name: str = "collector") -> Collector:
        # Quiet: no waterfall per trace, which at thousands of traces a second would cost the
        # collector more than receiving.
        return self.stack.start_collector(free_collector_ports(), name=name, args=("--quiet",))

    def service(
        self, name: str, module: str, port: int, collector: Collector, env: dict[str, str]
    ) -> Process:
        full_env = {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
            "PYTHONPATH": _pythonpath(),
            **self.telemetry_env,
            **env,
        }
        process = self.stack.start(name, module, full_env)
        self.expect_ready(process, f"http://127.0.0.1:{port}/readyz")
        return process

    def expect_ready(self, process: Process, url: str) -> None:
        self._pending.append((process, url))

    def wait_ready(self) -> None:
        for process, url in self._pending:
            self.stack.wait_ready(process, url, timeout=60)
        self._pending.clear()

    def stop(self, processes: list[Process]) -> None:
        """Stop these processes in parallel (SIGTERM, drain, flush)."""
        threads = [threading.Thread(target=p.stop) for p in processes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for process in processes:
            if process in self.stack.processes:
                self.stack.processes.remove(process)

    def stop_all(self) -> None:
        collectors = [p for p in self.stack.processes if p.name.startswith("collector")]
        self.stop([p for p in self.stack.processes if p not in collectors])
        self.stop(collectors)


def _pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH")
    return f"{REPO}{os.pathsep}{existing}" if existing else str(REPO)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --- Collector metrics ---------------------------------------------------------


def scrape(metrics_url: str) -> dict[str, float]:
    """The numbers section 4 needs from the collector's /metrics page."""
    with urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    values = {
        "spans_received": 0.0,
        "work_requests": 0.0,
        "work_requests_ok": 0.0,
        "spans_lost_reported": 0.0,
    }
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        if name == "tandem_collector_spans_received_total":
            values["spans_received"] = float(value)
        elif (
            name == "http_server_request_duration_seconds_count"
            and 'http_route="/api/work"' in name_labels
            and 'job="tandem/gateway"' in name_labels
        ):
            values["work_requests"] += float(value)
            if 'http_response_status_code="200"' in name_labels:
                values["work_requests_ok"] += float(value)
        elif name.startswith("tandem_telemetry_spans_lost"):
            values["spans_lost_reported"] += float(value)
    return values


def wait_settled(metrics_url: str, quiet_for: float, timeout: float) -> dict[str, float]:
    """Scrape until the counters stand still for `quiet_for` s: every span and metric is in."""
    deadline = time.monotonic() + timeout
    last = scrape(metrics_url)
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = scrape(metrics_url)
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet_for:
            return now
    log(f"collector counters still moving after {timeout}s; using the last scrape")
    return last


# --- Measurements --------------------------------------------------------------


def rotated(names: list[str], round_index: int) -> list[str]:
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def hop_client(
    kind: str, url: str, collector: Collector, size: Size, concurrency: int
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TANDEM_"))}
    env.update(size.telemetry_env())
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.grpc_endpoint
    env["PYTHONPATH"] = _pythonpath()
    if kind == "tandem_untraced":
        kind, env["OTEL_SDK_DISABLED"] = "tandem", "true"
    elif kind in ON_THE_PUBLIC_PATH:
        kind = ON_THE_PUBLIC_PATH[kind]
        env.update(PUBLIC_PATH)
    command = [
        sys.executable,
        "-m",
        "benchmarks.hop",
        "client",
        "--kind",
        kind,
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(size.hop_seconds),
        "--warmup",
        str(size.hop_warmup),
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


def run_all(size: Size, generator: str, logdir: Path, load: Load | None = None) -> Run:
    load = load or Load()
    run = Run(size, generator, load)
    run.machine = machine_info(generator)
    began = time.monotonic()
    procs = Processes(logdir, size.telemetry_env())

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
            app, extra = (
                ON_THE_PUBLIC_PATH.get(variant, variant),
                PUBLIC_PATH if variant in ON_THE_PUBLIC_PATH else {},
            )
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
            gateway_port, gateway_internal_port, worker_port = free_ports(3)
            gateway_env, worker_env = pair_env(gateway_port, gateway_internal_port, worker_port)
            gateway_env, worker_env = (
                {**gateway_env, **NO_ADMISSION_LIMIT},
                {**worker_env, **NO_ADMISSION_LIMIT},
            )
            if variant == "contrib":
                procs.service(
                    "worker-contrib",
                    "benchmarks.serve",
                    worker_port,
                    collector,
                    {**worker_env, "BENCH_APP": "benchmarks.contrib_services:worker"},
                )
                procs.service(
                    "gateway-contrib",
                    "benchmarks.serve",
                    gateway_port,
                    collector,
                    {
                        **gateway_env,
                        "BENCH_APP": "benchmarks.contrib_services:gateway",
                        "BENCH_INTERNAL_APP": "benchmarks.contrib_services:gateway_internal",
                    },
                )
            else:
                extra = (
                    {"OTEL_SDK_DISABLED": "true"}
                    if variant == "disabled"
                    else PUBLIC_PATH
                    if variant in ON_THE_PUBLIC_PATH
                    else {}
                )
                procs.service(
                    f"worker-{variant}", "worker", worker_port, collector, {**worker_env, **extra}
                )
                procs.service(
                    f"gateway-{variant}",
                    "gateway",
                    gateway_port,
                    collector,
                    {**gateway_env, **extra},
                )
            full_urls[variant] = f"http://127.0.0.1:{gateway_port}/api/work?tasks={TASKS}"
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
                {"PYTHONPATH": _pythonpath()},
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
            log(f"round {r + 1}/{size.rounds}: trivial route")
            for variant in rotated(list(size.trivial_variants), r):
                result = drive(
                    trivial_urls[variant],
                    size.trivial_seconds,
                    load.trivial_threads,
                    load.trivial_connections,
                )
                run.trivial.append({"round": r, "variant": variant, **result.to_dict()})
                log(f"  {variant:10} {result.rps:8.0f} req/s  errors {result.errors}")
                time.sleep(size.pause)
            log(f"round {r + 1}/{size.rounds}: full path")
            for variant in rotated(list(size.full_variants), r):
                result = drive(
                    full_urls[variant], size.full_seconds, load.full_threads, load.full_connections
                )
                run.full.append({"round": r, "variant": variant, **result.to_dict()})
                log(
                    f"  {variant:10} {result.rps:8.0f} req/s  p50 {result.p50_ms:.1f} ms  "
                    f"p99 {result.p99_ms:.1f} ms  errors {result.errors}"
                )
                time.sleep(size.pause)
            log(f"round {r + 1}/{size.rounds}: hop")
            for server in size.hop_servers:
                for kind in rotated(list(size.hop_clients), r):
                    hop = hop_client(kind, hop_urls[server], collector, size, load.hop_concurrency)
                    run.hop.append({"round": r, "server": server, **hop, "client": kind})
                    log(f"  {server:6} {kind:8} {hop['rps']:8.0f} req/s  errors {hop['errors']}")
                    time.sleep(size.pause)

        log("stopping sections 1-3")
        procs.stop_all()
        run.delivery = measure_delivery(procs, size, load, drive)
    finally:
        procs.stop_all()
    # Section 7 starts and stops processes of its own (two stacks side by side).
    from benchmarks import overload

    run.overload = overload.run(overload.SIZES[size.name], generator, logdir)
    run.overload["command"] = "the same run"
    log("in-process micro-benchmarks of the hot path (benchmarks/micro.py)")
    run.micro = micro.run_all(quick=size.quick_micro, cases=size.micro_cases)
    run.seconds = time.monotonic() - began
    return run


def measure_delivery(procs: Processes, size: Size, load: Load, drive) -> dict[str, Any]:
    """Sections 4 and 5: fresh collector and services, the full path for `delivery_seconds`."""
    log(
        f"span delivery: fresh collector and services, {size.delivery_seconds:.0f} s at the "
        "full-path load"
    )
    collector = procs.collector("collector-delivery")
    gateway_port, gateway_internal_port, worker_port = free_ports(3)
    gateway_env, worker_env = pair_env(gateway_port, gateway_internal_port, worker_port)
    gateway_env, worker_env = (
        {**gateway_env, **NO_ADMISSION_LIMIT},
        {**worker_env, **NO_ADMISSION_LIMIT},
    )
    worker = procs.service("worker-delivery", "worker", worker_port, collector, worker_env)
    gateway = procs.service("gateway-delivery", "gateway", gateway_port, collector, gateway_env)
    procs.wait_ready()
    url = f"http://127.0.0.1:{gateway_port}/api/work?tasks={TASKS}"
    if size.delivery_warmup:
        # So that "before" is a running service (pools, caches), not a fresh import.
        drive(url, size.delivery_warmup, load.full_threads, load.full_connections)
    env = size.telemetry_env()
    quiet_for = (
        int(env["OTEL_METRIC_EXPORT_INTERVAL"]) / 1000
        + int(env["OTEL_BSP_SCHEDULE_DELAY"]) / 1000
        + 1
    )
    before = wait_settled(collector.metrics_url, quiet_for, size.settle_timeout)
    rss_before = {"gateway": rss_kib(gateway.popen.pid), "worker": rss_kib(worker.popen.pid)}
    result = drive(url, size.delivery_seconds, load.full_threads, load.full_connections)
    rss_end = {"gateway": rss_kib(gateway.popen.pid), "worker": rss_kib(worker.popen.pid)}
    after = wait_settled(collector.metrics_url, quiet_for, size.settle_timeout)
    rss_settled = {"gateway": rss_kib(gateway.popen.pid), "worker": rss_kib(worker.popen.pid)}
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


# --- Summaries -------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    return (
        {"median": statistics.median(values), "min": min(values), "max": max(values)}
        if values
        else {"median": 0.0, "min": 0.0, "max": 0.0}
    )


def paired_ratios(
    rows: list[dict[str, Any]], key: str, variant: str, baseline: str, value: str = "rps"
) -> list[float]:
    by_round: dict[int, dict[str, float]] = {}
    for row in rows:
        by_round.setdefault(row["round"], {})[row[key]] = row[value]
    return [v[variant] / v[baseline] for v in by_round.values() if variant in v and v.get(baseline)]


def measured(rows: list[dict[str, Any]], key: str, names: dict[str, str]) -> list[str]:
    """The names (in their table's order) that have rows: a smaller size measures fewer."""
    present = {row[key] for row in rows}
    return [name for name in names if name in present]


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Medians, spreads and per-round ratios, from a run's raw rows."""
    summary: dict[str, Any] = {"trivial": {}, "full": {}, "hop": {}}
    for variant in measured(data["trivial"], "variant", TRIVIAL_VARIANTS):
        rows = [r for r in data["trivial"] if r["variant"] == variant]
        summary["trivial"][variant] = {
            "rps": spread([r["rps"] for r in rows]),
            "ratio": spread(paired_ratios(data["trivial"], "variant", variant, "untraced")),
            "errors": sum(r["errors"] for r in rows),
            "requests": sum(r["requests"] for r in rows),
        }
    for variant in measured(data["full"], "variant", FULL_VARIANTS):
        rows = [r for r in data["full"] if r["variant"] == variant]
        summary["full"][variant] = {
            "rps": spread([r["rps"] for r in rows]),
            "p50_ms": spread([r["p50_ms"] for r in rows]),
            "p99_ms": spread([r["p99_ms"] for r in rows]),
            "ratio_to_disabled": spread(
                paired_ratios(data["full"], "variant", variant, "disabled")
            ),
            "ratio_to_contrib": spread(paired_ratios(data["full"], "variant", variant, "contrib")),
            "errors": sum(r["errors"] for r in rows),
            "requests": sum(r["requests"] for r in rows),
        }
    for server in measured(data["hop"], "server", HOP_SERVERS):
        rows = [r for r in data["hop"] if r["server"] == server]
        summary["hop"][server] = {}
        for kind in measured(rows, "client", HOP_CLIENTS):
            mine = [r for r in rows if r["client"] == kind]
            summary["hop"][server][kind] = {
                "rps": spread([r["rps"] for r in mine]),
                "ratio": spread(paired_ratios(rows, "client", kind, "aiohttp")),
                "errors": sum(r["errors"] for r in mine),
                "requests": sum(r["requests"] for r in mine),
            }
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Tandem's benchmark harness (make bench)."
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny run of seconds, for the test suite"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs", help="where benchmarks.md and benchmarks.png go"
    )
    parser.add_argument(
        "--raw", type=Path, default=None, help="also write the raw results as JSON here"
    )
    parser.add_argument(
        "--loadgen",
        choices=("wrk", "python", "auto"),
        default="wrk",
        help=(
            "wrk (default; required for published figures), or the aiohttp stand-in, "
            "or wrk if installed"
        ),
    )
    parser.add_argument("--logdir", type=Path, default=None, help="keep the processes' logs here")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="RAW",
        help=(
            "measure nothing: write benchmarks.md and .png to --out from a --raw file "
            "of an earlier run"
        ),
    )
    args = parser.parse_args(argv)

    from benchmarks import report

    if args.render is not None:
        data = json.loads(args.render.read_text())
        data["summary"] = summarize(data)
        args.out.mkdir(parents=True, exist_ok=True)
        report.write_markdown(data, args.out / "benchmarks.md")
        report.write_chart(data, args.out / "benchmarks.png")
        if data.get("overload"):
            report.write_overload_chart(data["overload"], args.out / report.OVERLOAD_CHART)
        return 0

    generator = loadgen.choose_generator(args.loadgen, "make bench")
    size = SIZES["smoke" if args.smoke else "full"]
    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    logdir.mkdir(parents=True, exist_ok=True)
    log(f"size {size.name}, load generator {generator}, logs in {logdir}")
    run = run_all(size, generator, logdir)
    run.command = os.environ.get("BENCH_COMMAND") or " ".join(
        [
            Path(sys.executable).name,
            "-m",
            "benchmarks",
            *(argv if argv is not None else sys.argv[1:]),
        ]
    )
    data = run.to_dict()
    data["summary"] = summarize(data)
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_markdown(data, args.out / "benchmarks.md")
    report.write_chart(data, args.out / "benchmarks.png")
    report.write_overload_chart(data["overload"], args.out / report.OVERLOAD_CHART)
    if args.raw is not None:
        args.raw.parent.mkdir(parents=True, exist_ok=True)
        args.raw.write_text(json.dumps(data, indent=1) + "\n")
    log(f"done in {run.seconds:.0f} s: {args.out / 'benchmarks.md'}, {args.out / 'benchmarks.png'}")
    return 0
