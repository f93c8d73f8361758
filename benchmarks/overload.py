"""Section 7, overload: capacity, then 4× and 16× the connections that reach it, limit on and off.

A section of `python -m benchmarks` (benchmarks/__main__.py). `make bench-overload` runs it
alone (`--only overload`) and replaces its part of benchmarks/results.json, the other sections
keeping the figures of their own run; `make bench` runs it with the others.

Stacks run side by side, each a collector, a worker and a gateway served
as in production (tandem_localstack.Stack, hypercorn, one process each):
"on" with the services' default admission limits, "off" with MAX_IN_FLIGHT=0
on both, and one per other limit (Size.limit_variants). The load is
`GET /api/work?tasks=8`, closed-loop: wrk connections that send their next
request as soon as an answer comes, shed or not, and ignore Retry-After (a
client that honoured it would only make overload easier).

1. Sweep: goodput (2xx per second) at each connection count, both stacks.
   Capacity is the highest goodput of the "on" sweep; the connections that
   reach it are the fewest whose goodput is within 5% of it (on a plateau, the
   later points are the same capacity reached by more clients than needed).
2. Overload: at 4× and 16× those connections, every stack, in rounds with
   the order rotating: goodput, latency by outcome (wrk_overload.lua), the
   peak RSS of both services, CPU, and spans expected, received and dropped.
   At the fixed counts (512), on and off only.

Between measurements each stack is left to go idle, so that one stack's
backlog never runs during the other's measurement.
"""

from __future__ import annotations

import os
import threading
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
    quiet_for,
    rotated,
    rss_kib,
    settled,
)
from gateway.settings import DEFAULT_MAX_IN_FLIGHT as GATEWAY_MAX_IN_FLIGHT
from tandem_localstack import Collector, Process
from tandem_tracecheck.prometheus import scrape
from worker.settings import DEFAULT_MAX_IN_FLIGHT as WORKER_MAX_IN_FLIGHT

SECTION = "overload"
TASKS = 8
PATH = f"/api/work?tasks={TASKS}"
CONFIGS = {
    "on": "admission limit on (the services' defaults)",
    "off": "admission limit off (MAX_IN_FLIGHT=0 on both services)",
}
CONFIG_ENV = {"on": {}, "off": {"MAX_IN_FLIGHT": "0"}}


def variant(limit: int) -> str:
    """The configuration with MAX_IN_FLIGHT=`limit` on both services (Size.limit_variants)."""
    return f"max{limit}"


# Within this fraction of the highest goodput, a sweep point has reached capacity.
PLATEAU = 0.95
TARGETS = {"goodput": 0.90, "shed_p99_ms": 50.0, "ok_p99_ratio": 2.0}
# Per round and load: each configuration's goodput to the limit-off stack's (benchmarks.compare).
RATIOS = [{"rows": "overload", "by": "config", "to": "off", "value": "goodput", "within": "load"}]


@dataclass(frozen=True)
class Size:
    name: str
    sweep: tuple[int, ...]
    sweep_seconds: float
    overload_seconds: float
    rounds: int
    warmup_seconds: float
    settle_timeout: float
    multiples: tuple[int, ...] = (4, 16)
    # Other limits (MAX_IN_FLIGHT on both services, in tasks) measured at the multiples beside
    # the default, to show where it sits: one too small starves goodput, one too large lets
    # admitted requests queue.
    limit_variants: tuple[int, ...] = ()
    # Connection counts measured as they are, whatever the capacity (512: the worst case measured
    # before the limit existed).
    fixed: tuple[int, ...] = ()
    export_overrides: tuple[tuple[str, str], ...] = ()

    def telemetry_env(self) -> dict[str, str]:
        return {**TELEMETRY_ENV, **dict(self.export_overrides)}

    def configs(self) -> dict[str, dict[str, str]]:
        """Every configuration measured, with its env: CONFIGS, then the limit variants."""
        return {
            **CONFIG_ENV,
            **{variant(n): {"MAX_IN_FLIGHT": str(n)} for n in self.limit_variants},
        }


SIZES = {
    # About 15 minutes on the 2-core machine.
    "full": Size(
        "full",
        sweep=(1, 2, 3, 4, 6, 8, 16, 32, 64),
        sweep_seconds=8,
        overload_seconds=15,
        rounds=2,
        warmup_seconds=3,
        settle_timeout=90,
        fixed=(512,),
        limit_variants=(16, 32, 64),
    ),
    "smoke": Size(
        "smoke",
        sweep=(1, 2),
        sweep_seconds=1,
        overload_seconds=1,
        rounds=1,
        warmup_seconds=0,
        settle_timeout=30,
        # One multiple: the code is the same for each, and make test waits on every measurement.
        multiples=(4,),
        limit_variants=(16,),
        export_overrides=SMOKE_EXPORT,
    ),
}


# --- The stacks ----------------------------------------------------------------------


@dataclass
class Stack:
    config: str
    collector: Collector
    gateway: Process
    worker: Process
    collector_process: Process
    url: str
    counters: dict[str, float] | None = None

    @property
    def pids(self) -> dict[str, int]:
        return {
            "gateway": self.gateway.popen.pid,
            "worker": self.worker.popen.pid,
            "collector": self.collector_process.popen.pid,
        }


def start_stacks(procs: Processes, configs: dict[str, dict[str, str]]) -> dict[str, Stack]:
    stacks: dict[str, Stack] = {}
    for config, config_env in configs.items():
        collector = procs.collector(f"collector-{config}")
        collector_process = procs.stack.processes[-1]
        gateway, worker, port = procs.pair(config, collector, config_env)
        url = f"http://127.0.0.1:{port}{PATH}"
        stacks[config] = Stack(config, collector, gateway, worker, collector_process, url)
    procs.wait_ready()
    return stacks


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # utime and stime, fields 14 and 15 of proc(5), in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(stack: Stack, timeout: float) -> None:
    """Return once the gateway and the worker have used under 5% CPU for a second."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    last = sum(cpu_seconds(stack.pids[p]) for p in ("gateway", "worker"))
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = sum(cpu_seconds(stack.pids[p]) for p in ("gateway", "worker"))
        busy = (now - last) / 0.25 > 0.05
        last = now
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 1.0:
            return
    log(f"  {stack.config}: still busy after {timeout:.0f} s")


# --- Span accounting, from the collector's metrics -------------------------------------


def counters(metrics_url: str) -> dict[str, float]:
    """What the span accounting needs from the collector's Prometheus page."""
    values = {
        "received": 0.0,
        "lost": 0.0,
        "server_spans": 0.0,
        "client_spans": 0.0,
        "tasks_ok": 0.0,
        "tasks_computed_failed": 0.0,
        "shed_counted_gateway": 0.0,
        "shed_counted_worker": 0.0,
        "gateway_requests": 0.0,
    }
    for name, labels, value in scrape(metrics_url):
        job = labels.get("job", "")
        if name == "tandem_collector_spans_received_total":
            values["received"] += value
        elif name.startswith("tandem_telemetry_spans_lost"):
            values["lost"] += value
        elif name == "http_server_request_duration_seconds_count":
            values["server_spans"] += value
            if job == "tandem/gateway" and labels.get("http_route") == "/api/work":
                values["gateway_requests"] += value
            if job == "tandem/worker" and labels.get("http_route") == "/tasks":
                status = labels.get("http_response_status_code", "")
                if status == "200":
                    values["tasks_ok"] += value
                elif status.startswith("5") and labels.get("error_type") != "load_shed":
                    # Computed, then failed on the quota call: a compute span, no publish span.
                    values["tasks_computed_failed"] += value
        elif name == "http_client_request_duration_seconds_count":
            values["client_spans"] += value
        elif name == "tandem_server_requests_shed_total":
            key = "shed_counted_gateway" if job == "tandem/gateway" else "shed_counted_worker"
            values[key] += value
    # Every SERVER and CLIENT span is also a duration metric; INTERNAL spans are a served
    # task's compute and publish, or the compute alone of a task that failed after it.
    values["expected"] = (
        values["server_spans"]
        + values["client_spans"]
        + 2 * values["tasks_ok"]
        + values["tasks_computed_failed"]
    )
    return values


def settled_counters(stack: Stack, size: Size) -> dict[str, float]:
    """The collector's counters once they stop moving: every span and metric has arrived."""
    return settled(
        lambda: counters(stack.collector.metrics_url),
        quiet_for(size.telemetry_env()),
        size.settle_timeout,
        f"overload, {stack.config}",
    )


# --- One measurement ---------------------------------------------------------------------


class PeakRSS:
    """Sample the VmRSS of some processes every 0.2 s while a measurement runs."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = {name: rss_kib(pid) for name, pid in pids.items()}
        self.start = dict(self.peak)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_kib(pid))

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# The chart's readinessProbe.timeoutSeconds (a test holds them together).
PROBE_TIMEOUT_SECONDS = 5


class ReadinessProbe:
    """GET /readyz every 0.5 s, as the kubelet would (with its timeout), while load runs."""

    def __init__(self, url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.timeout = timeout
        self.latencies_ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from urllib.error import URLError
        from urllib.request import urlopen

        while not self._stop.wait(0.5):
            began = time.perf_counter()
            try:
                with urlopen(self.url, timeout=self.timeout) as response:
                    response.read()
                    ok = response.status == 200
            except (URLError, OSError):
                ok = False
            if ok:
                self.latencies_ms.append((time.perf_counter() - began) * 1000)
            else:
                self.failures += 1

    def __enter__(self) -> ReadinessProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        values = sorted(self.latencies_ms)
        return {
            "probes": len(values) + self.failures,
            "failures": self.failures,
            "max_ms": values[-1] if values else 0.0,
            "p50_ms": values[len(values) // 2] if values else 0.0,
        }


def machine_cpu() -> dict[str, float]:
    """Seconds the machine's CPUs spent busy (and of that, on interrupts), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "busy": (user + nice + system + irq + softirq + steal) / tick,
        "interrupts": (irq + softirq) / tick,
        "idle": (idle + iowait) / tick,
    }


def children_cpu() -> float:
    """CPU seconds used so far by this process's finished children: wrk, for one."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_one(stack: Stack, connections: int, seconds: float, generator: str) -> dict[str, Any]:
    pids = stack.pids
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    machine_before, loadgen_before = machine_cpu(), children_cpu()
    load_before = os.getloadavg()[0]
    services = {name: pids[name] for name in ("gateway", "worker")}
    readyz = stack.url.split("/api/")[0] + "/readyz"
    with PeakRSS(services) as rss, ReadinessProbe(readyz) as probe:
        result = loadgen.run_outcomes(
            stack.url, seconds, generator=generator, connections=connections
        )
    machine_after = machine_cpu()
    elapsed = result.seconds
    cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / elapsed for name, pid in pids.items()}
    # wrk is a child that has exited by now; the Python stand-in runs in this process.
    cpu["loadgen"] = (children_cpu() - loadgen_before) / elapsed
    cpu["machine"] = (machine_after["busy"] - machine_before["busy"]) / elapsed
    cpu["interrupts"] = (machine_after["interrupts"] - machine_before["interrupts"]) / elapsed
    return {
        "config": stack.config,
        "connections": connections,
        **result.to_dict(),
        "cpu": cpu,
        "rss_kib": {"start": rss.start, "peak": rss.peak},
        "readyz": probe.summary(),
        "load_average": load_before,
    }


def loads(size: Size, capacity: dict[str, Any]) -> list[tuple[str, int]]:
    """(label, connections) of the overload measurements: the multiples, then the fixed counts."""
    return [(f"{k}x", k * capacity["connections"]) for k in size.multiples] + [
        (f"{n}c", n) for n in size.fixed
    ]


def describe(row: dict[str, Any]) -> str:
    ok, shed = row["ok"], row["shed"]
    return (
        f"{row['config']:3} c={row['connections']:<4} goodput {row['goodput']:6.1f}/s  "
        f"ok p99 {ok['p99_ms']:7.1f} ms  shed {shed['count'] / row['seconds']:7.1f}/s "
        f"p99 {shed['p99_ms']:6.1f} ms  other {row['other']['count']}  "
        f"errors {row['socket_errors']}  cpu gw {row['cpu']['gateway']:.2f} "
        f"wk {row['cpu']['worker']:.2f} col {row['cpu']['collector']:.2f} "
        f"wrk {row['cpu']['loadgen']:.2f} all {row['cpu']['machine']:.2f}  "
        f"readyz max {row['readyz']['max_ms']:.0f} ms  load {row['load_average']:.2f}"
    )


# --- The run ----------------------------------------------------------------------------------


def capacity_of(sweep: list[dict[str, Any]]) -> dict[str, Any]:
    """Capacity from the "on" sweep: the highest goodput, and the fewest connections near it."""
    rows = [row for row in sweep if row["config"] == "on"]
    best = max(row["goodput"] for row in rows)
    reaching = min(
        (row for row in rows if row["goodput"] >= PLATEAU * best), key=lambda r: r["connections"]
    )
    return {
        "goodput": best,
        "connections": reaching["connections"],
        "ok_p99_ms": reaching["ok"]["p99_ms"],
        "ok_p50_ms": reaching["ok"]["p50_ms"],
        "off_goodput": max(row["goodput"] for row in sweep if row["config"] == "off"),
    }


def measure(size_name: str, generator: str, logdir: Path) -> dict[str, Any]:
    size = SIZES[size_name]
    began = time.monotonic()
    procs = Processes(logdir, size.telemetry_env())
    data: dict[str, Any] = {
        "size": asdict(size),
        "tasks": TASKS,
        "configs": CONFIGS,
        "config_env": size.configs(),
        "default_limits": {"gateway": GATEWAY_MAX_IN_FLIGHT, "worker": WORKER_MAX_IN_FLIGHT},
        "targets": TARGETS,
        "plateau": PLATEAU,
        "probe_timeout_seconds": PROBE_TIMEOUT_SECONDS,
        "ratios": RATIOS,
        "telemetry_env": size.telemetry_env(),
        "load_average_start": os.getloadavg(),
        "sweep": [],
        "overload": [],
    }
    try:
        log(
            "overload: starting a collector, worker and gateway with the limit on, with it off, "
            "and with each other limit"
        )
        stacks = start_stacks(procs, size.configs())
        if size.warmup_seconds:
            for stack in stacks.values():
                loadgen.run_outcomes(
                    stack.url, size.warmup_seconds, generator=generator, connections=4
                )
        for stack in stacks.values():
            wait_idle(stack, size.settle_timeout)

        log("overload: capacity sweep")
        for index, connections in enumerate(size.sweep):
            for config in rotated(list(CONFIGS), index):
                row = measure_one(stacks[config], connections, size.sweep_seconds, generator)
                data["sweep"].append(row)
                log("  " + describe(row))
                wait_idle(stacks[config], size.settle_timeout)
        capacity = capacity_of(data["sweep"])
        data["capacity"] = capacity
        log(
            f"overload: capacity {capacity['goodput']:.1f}/s, reached at "
            f"{capacity['connections']} connections (success p99 {capacity['ok_p99_ms']:.1f} ms)"
        )

        for stack in stacks.values():
            stack.counters = settled_counters(stack, size)
        turn = 0
        for round_index in range(size.rounds):
            for label, connections in loads(size, capacity):
                log(f"overload: round {round_index + 1}/{size.rounds}, {label} = {connections}")
                # The other limits at the multiples only: the fixed counts compare on and off.
                measured = list(CONFIGS if label.endswith("c") else size.configs())
                for config in rotated(measured, turn):
                    turn += 1
                    stack = stacks[config]
                    row = measure_one(stack, connections, size.overload_seconds, generator)
                    after = settled_counters(stack, size)
                    before = stack.counters or {}
                    spans = {key: after[key] - before.get(key, 0.0) for key in after}
                    stack.counters = after
                    row.update(round=round_index, load=label, spans=spans)
                    data["overload"].append(row)
                    log(
                        "  "
                        + describe(row)
                        + f"  spans {spans['received']:.0f}/{spans['expected']:.0f}"
                        + f" lost {spans['lost']:.0f}"
                    )
    finally:
        procs.stop_all()
    data["load_average_end"] = os.getloadavg()
    data["seconds"] = time.monotonic() - began
    return data
