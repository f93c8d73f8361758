"""Section 7, overload: capacity, then 4× and 16× the connections that reach it, limit on and off.

A section of `python -m benchmarks` (benchmarks/__main__.py); `report` makes its part of the
document and its chart from what `measure` wrote. `make bench-overload` runs it
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
import statistics
import threading
import time
from collections.abc import Callable
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
from benchmarks.results import Block, heading, met, shown, spread, table, text
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


# --- The report: section 7 and its chart, from the figures above ------------------------------

CHART = "benchmarks-overload.png"
COLORS = {"on": "#2a7ab9", "off": "#d98c2b"}


def summarize(o: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per configuration and load ("on-4x"), load by load, on first: medians [min–max] over the
    rounds, and the targets, judged on the medians."""
    capacity, targets, size = o["capacity"], o["targets"], o["size"]
    loads = [f"{k}x" for k in size["multiples"]] + [f"{n}c" for n in size.get("fixed", ())]
    summary: dict[str, Any] = {}
    for label in loads:
        for config in o["config_env"]:
            rows = [r for r in o["overload"] if r["config"] == config and r["load"] == label]
            if not rows:
                continue
            shed_rows = [r for r in rows if r["shed"]["count"]]
            goodput = spread([r["goodput"] for r in rows])
            ok_p99 = spread([r["ok"]["p99_ms"] for r in rows])
            shed_p99 = spread([r["shed"]["p99_ms"] for r in shed_rows])
            other_statuses: dict[str, int] = {}
            for row in rows:
                for status, count in row["statuses"].items():
                    if not status.startswith("2"):
                        other_statuses[status] = other_statuses.get(status, 0) + count
            processes = ("gateway", "worker")
            entry = {
                "config": config,
                "load": label,
                "connections": rows[0]["connections"],
                "targeted": label.endswith("x"),
                "goodput": goodput,
                "goodput_ratio": spread([r["goodput"] / capacity["goodput"] for r in rows]),
                "ok_p50_ms": spread([r["ok"]["p50_ms"] for r in rows]),
                "ok_p99_ms": ok_p99,
                "ok_p99_ratio": spread([r["ok"]["p99_ms"] / capacity["ok_p99_ms"] for r in rows]),
                "shed_per_second": spread([r["shed"]["count"] / r["seconds"] for r in rows]),
                "shed_p50_ms": spread([r["shed"]["p50_ms"] for r in shed_rows]),
                "shed_p99_ms": shed_p99,
                "shed": sum(r["shed"]["count"] for r in rows),
                "other_statuses": other_statuses,
                "socket_errors": sum(r["socket_errors"] for r in rows),
                "rss_peak_mib": {
                    p: max(r["rss_kib"]["peak"][p] for r in rows) / 1024 for p in processes
                },
                "rss_start_mib": {
                    p: min(r["rss_kib"]["start"][p] for r in rows) / 1024 for p in processes
                },
                "cpu": {
                    p: statistics.median(r["cpu"][p] for r in rows)
                    for p in ("gateway", "worker", "collector", "loadgen", "machine", "interrupts")
                },
                "readyz": {
                    "probes": sum(r["readyz"]["probes"] for r in rows),
                    "failures": sum(r["readyz"]["failures"] for r in rows),
                    "max_ms": max(r["readyz"]["max_ms"] for r in rows),
                },
                "spans": {
                    key: sum(r["spans"][key] for r in rows)
                    for key in ("expected", "received", "lost")
                },
                "shed_counted": sum(
                    r["spans"]["shed_counted_gateway"] + r["spans"]["shed_counted_worker"]
                    for r in rows
                ),
                "rounds": len(rows),
            }
            entry["met"] = {
                "goodput": goodput["median"] >= targets["goodput"] * capacity["goodput"],
                "shed_p99": bool(entry["shed"]) and shed_p99["median"] < targets["shed_p99_ms"],
                "ok_p99": ok_p99["median"] <= targets["ok_p99_ratio"] * capacity["ok_p99_ms"],
            }
            summary[f"{config}-{label}"] = entry
    return summary


def _load_label(entry: dict[str, Any]) -> str:
    return entry["load"].replace("x", "×") if entry["targeted"] else f"{entry['connections']} fixed"


def _named(entry: dict[str, Any]) -> str:
    return f"limit {entry['config']}, {_load_label(entry)}"


def _ms(values: dict[str, float]) -> str:
    return shown(values, "{:.1f}")


def report(o: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    own = o.get("run")
    run = own or results["run"]
    targets, configs, cap, size = o["targets"], o["configs"], o["capacity"], o["size"]
    summary = summarize(o)
    # The on and off entries, in the order measured: load by load, on first.
    entries = [e for e in summary.values() if e["config"] in configs]
    produced = (
        f"Produced by `{run['command']}` on {run['machine']['date']}, in "
        f"{o['seconds'] / 60:.1f} minutes, apart from the other sections (which keep the "
        "figures of their own run)"
        if own
        else f"Measured in the same run, in {o['seconds'] / 60:.1f} minutes"
    )
    body: list[Block] = [
        heading("7. Overload"),
        text(
            f"{produced}. Load average (1 min) when it started and ended: "
            f"{o['load_average_start'][0]:.2f} and {o['load_average_end'][0]:.2f} (the run's "
            "own processes count in it: about 2 while a measurement runs); before each "
            f"measurement, in the `load` column. The chart: [{CHART}]({CHART})."
        ),
    ]
    if run["generator"] != "wrk":
        body.append(
            text("> **Not publishable**: this run used the Python stand-in load generator.")
        )
    multiples = " and ".join(f"{k}×" for k in size["multiples"])
    fixed = ", ".join(str(n) for n in size.get("fixed", ()))
    body += [
        text(
            f"`GET /api/work?tasks={o['tasks']}` through a gateway and a worker (one process "
            "each) and their collector, closed-loop: each wrk connection sends its next request "
            "as soon as an answer comes, shed or not, and ignores `Retry-After`. Such stacks run "
            "side by side: "
            + "; ".join(f"**{k}**: {v}" for k, v in configs.items())
            + (
                "; and, at the 4× and 16× loads only, one for each of the other limits in the "
                "table after the targets"
                if size.get("limit_variants")
                else ""
            )
            + ". wrk's script (benchmarks/wrk_overload.lua) gives each request a trace id of its "
            "own and matches the answer by its `traceresponse`, so latency is split by outcome: "
            "**success** (2xx), **shed** (503 with `Retry-After`) and **other** (any other "
            "status)."
        ),
        text(
            "**Capacity** is the highest goodput (successes per second) of the limit-on sweep "
            f"below: **{cap['goodput']:.1f}/s**, first reached (within "
            f"{100 * (1 - o['plateau']):.0f}%) at **{cap['connections']} connections**, where "
            f"successes took p99 **{cap['ok_p99_ms']:.1f} ms** (the limit-off sweep's highest "
            f"goodput: {cap['off_goodput']:.1f}/s). The overload runs use {multiples} those "
            "connections"
            + (
                f", and {fixed} connections (the worst case measured before the limit existed)"
                if fixed
                else ""
            )
            + f"; {size['overload_seconds']:.0f} s each, in {size['rounds']} round(s), the order "
            "rotating; figures are the median [min–max] over the rounds."
        ),
    ]
    goodput_target = targets["goodput"] * cap["goodput"]
    p99_target = targets["ok_p99_ratio"] * cap["ok_p99_ms"]
    cells = [
        (
            f"Goodput ≥ {targets['goodput']:.0%} of capacity (≥ {goodput_target:.1f}/s)",
            "goodput",
            lambda e: f"{shown(e['goodput'], '{:.1f}')}/s = {e['goodput_ratio']['median']:.0%}",
        ),
        (
            f"Shed p99 < {targets['shed_p99_ms']:.0f} ms",
            "shed_p99",
            lambda e: f"{_ms(e['shed_p99_ms'])} ms" if e["shed"] else "nothing shed",
        ),
        (
            f"Success p99 ≤ {targets['ok_p99_ratio']:.0f} × {cap['ok_p99_ms']:.1f} ms "
            f"(≤ {p99_target:.0f} ms)",
            "ok_p99",
            lambda e: f"{_ms(e['ok_p99_ms'])} ms = {e['ok_p99_ratio']['median']:.1f} ×",
        ),
    ]
    targeted = [e for e in entries if e["targeted"]]
    body.append(
        table(
            [
                "Target",
                *(
                    f"limit {e['config']}, {_load_label(e)} ({e['connections']} connections)"
                    for e in targeted
                ),
            ],
            [
                [label, *(f"{show(e)} {met(e['met'][key])}" for e in targeted)]
                for label, key, show in cells
            ],
        )
    )
    body += _limit_blocks(o, summary, cells)
    body += _sweep_blocks(o)
    body += [
        text("**Under overload**, per configuration and load:"),
        table(
            [
                "",
                "connections",
                "goodput /s",
                "success p50 / p99 ms",
                "shed /s",
                "shed p50 / p99 ms",
                "other answers",
                "socket errors",
                "peak RSS gateway / worker MiB",
                "/readyz max ms (failed)",
                "spans expected / received / lost",
            ],
            [_overload_row(e) for e in entries],
        ),
        text(
            "**Where the CPU went**, in cores, median over the rounds (the machine has "
            f"{run['machine']['nproc']}):"
        ),
        table(
            ["", "gateway", "worker", "collector", "wrk", "whole machine", "of it, interrupts"],
            [
                [_named(e)]
                + [f"{e['cpu'][p]:.2f}" for p in ("gateway", "worker", "collector", "loadgen")]
                + [f"{e['cpu']['machine']:.2f}", f"{e['cpu']['interrupts']:.2f}"]
                for e in entries
            ],
        ),
        text(
            "Peak RSS is sampled every 0.2 s during each measurement (before the first: "
            + ", ".join(
                f"{config} {e['rss_start_mib']['gateway']:.0f} / {e['rss_start_mib']['worker']:.0f}"
                for config in configs
                for e in entries[:2]
                if e["config"] == config
            )
            + " MiB). /readyz is called every 0.5 s during each measurement with the chart's "
            f"probe timeout, {o['probe_timeout_seconds']} s. The whole machine's CPU is "
            "/proc/stat's busy time, other tenants included. Spans expected are counted from the "
            "services' duration metrics (one SERVER or CLIENT span per recorded request, plus "
            "compute and publish for each task the worker served); received is the collector's "
            "count; lost is what the services' batch processors reported dropped "
            "(`tandem.telemetry.spans.lost`), all read after the counters stopped moving. The "
            "shed counter (`tandem.server.requests.shed`) counted "
            + ", ".join(
                f"{e['shed_counted']:.0f} (wrk saw {e['shed']}) at {_load_label(e)}"
                for e in entries
                if e["config"] == "on"
            )
            + "; it also counts the requests still in flight when wrk stopped."
        ),
        {"include": "NOTES-overload.md"},
    ]
    return {"order": 7, "body": body, "charts": [chart(o, summary, run["machine"])]}


def _overload_row(e: dict[str, Any]) -> list[str]:
    statuses = dict(e["other_statuses"])
    # The 503s with Retry-After are the shed column's; what is left is another answer.
    statuses["503"] = statuses.get("503", 0) - e["shed"]
    others = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()) if v > 0) or "0"
    spans, readyz, rss = e["spans"], e["readyz"], e["rss_peak_mib"]
    return [
        _named(e),
        str(e["connections"]),
        shown(e["goodput"], "{:.1f}"),
        f"{_ms(e['ok_p50_ms'])} / {_ms(e['ok_p99_ms'])}",
        shown(e["shed_per_second"]),
        f"{_ms(e['shed_p50_ms'])} / {_ms(e['shed_p99_ms'])}" if e["shed"] else "–",
        others,
        str(e["socket_errors"]),
        f"{rss['gateway']:.0f} / {rss['worker']:.0f}",
        f"{readyz['max_ms']:.0f} ({readyz['failures']} of {readyz['probes']})",
        f"{spans['expected']:.0f} / {spans['received']:.0f} / {spans['lost']:.0f}",
    ]


def _limit_blocks(
    o: dict[str, Any],
    summary: dict[str, dict[str, Any]],
    cells: list[tuple[str, str, Callable[[dict[str, Any]], str]]],
) -> list[Block]:
    """The targets per gateway limit at each multiple: the default, the other limits, none."""
    # The configuration that ran each other limit (MAX_IN_FLIGHT on both services).
    variant_of = {
        int(env["MAX_IN_FLIGHT"]): config
        for config, env in o["config_env"].items()
        if config not in o["configs"]
    }
    defaults = o.get("default_limits")
    limits = sorted(o["size"].get("limit_variants", ()))
    if not limits or not defaults:
        return []
    # (configuration, as shown, its gateway limit): smallest limit first, no limit last.
    columns = sorted(
        [
            *((variant_of[n], f"{n}", n) for n in limits),
            ("on", f"{defaults['gateway']} (default)", defaults["gateway"]),
        ],
        key=lambda column: column[2],
    )
    columns.append(("off", "off", 0))
    rows = []
    for multiple in o["size"]["multiples"]:
        for config, limit, _ in columns:
            e = summary.get(f"{config}-{multiple}x")
            if e is not None:
                shown_cells = [f"{show(e)} {met(e['met'][key])}" for _, key, show in cells]
                rows.append([f"{multiple}×, {e['connections']} connections", limit, *shown_cells])
    return [
        text(
            "**Other limits.** The same loads, in the same rounds, with other values of "
            "`MAX_IN_FLIGHT` (in tasks, set on both services) beside the defaults (gateway "
            f"{defaults['gateway']}, worker {defaults['worker']}) and no limit:"
        ),
        table(["Load", "limit", *(label for label, _, _ in cells)], rows),
    ]


def _sweep_blocks(o: dict[str, Any]) -> list[Block]:
    by_connections: dict[int, dict[str, dict[str, Any]]] = {}
    for row in o["sweep"]:
        by_connections.setdefault(row["connections"], {})[row["config"]] = row
    rows = [
        [
            str(n),
            f"{on['goodput']:.1f}",
            f"{off['goodput']:.1f}",
            f"{on['ok']['p99_ms']:.1f}",
            f"{off['ok']['p99_ms']:.1f}",
            f"{on['shed']['count'] / on['seconds']:.0f}",
            f"{on['shed']['p99_ms']:.1f}",
            f"{on['load_average']:.2f}",
        ]
        for n, pair in sorted(by_connections.items())
        if (on := pair.get("on")) and (off := pair.get("off"))
    ]
    return [
        text("**The sweep.**"),
        table(
            [
                "Connections",
                "goodput on /s",
                "goodput off /s",
                "success p99 on ms",
                "success p99 off ms",
                "shed on /s",
                "shed p99 on ms",
                "load",
            ],
            rows,
        ),
    ]


def chart(
    o: dict[str, Any], summary: dict[str, dict[str, Any]], machine: dict[str, Any]
) -> dict[str, Any]:
    """Goodput and p99 against connections, sweep and overload runs, for benchmarks.render."""
    targets, cap = o["targets"], o["capacity"]
    goodput: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    for config in o["configs"]:
        color = COLORS[config]
        sweep = sorted(
            (r for r in o["sweep"] if r["config"] == config), key=lambda r: r["connections"]
        )
        over = [e for e in summary.values() if e["config"] == config]
        at = [r["connections"] for r in sweep]
        points = {"linestyle": "none", "marker": "s", "markersize": 9, "color": color}
        over_at = [e["connections"] for e in over]
        goodput += [
            {"kind": "line", "x": at, "y": [r["goodput"] for r in sweep], "color": color}
            | {"label": f"limit {config}, sweep"},
            {"kind": "line", "x": over_at, "y": [e["goodput"]["median"] for e in over]}
            | points
            | {"label": f"limit {config}, overload runs"},
        ]
        latency += [
            {"kind": "line", "x": at, "y": [r["ok"]["p99_ms"] for r in sweep], "color": color}
            | {"label": f"limit {config}: success p99"},
            {"kind": "line", "x": over_at, "y": [e["ok_p99_ms"]["median"] for e in over]} | points,
        ]
        shed = [e for e in over if e["shed"] and config == "on"]
        if shed:
            latency.append(
                {"kind": "line", "x": [e["connections"] for e in shed]}
                | {"y": [e["shed_p99_ms"]["median"] for e in shed]}
                | points
                | {"marker": "v", "color": "#555555", "label": "limit on: shed p99"}
            )
    return {
        "file": CHART,
        "title": f"Overload, GET /api/work?tasks={o['tasks']} — {machine['nproc']} × "
        f"{machine['cpu']}, {machine['date']} (sweep: one point each; overload: median over "
        f"{o['size']['rounds']} rounds)",
        "size": [14, 5.5],
        "grid": [1, 2],
        "top": 0.93,
        "panels": [
            {
                "title": "Goodput",
                "series": goodput,
                "hlines": [
                    {
                        "y": targets["goodput"] * cap["goodput"],
                        "color": "#555555",
                        "label": f"{targets['goodput']:.0%} of capacity",
                    }
                ],
                "xscale": "log2",
                "xlabel": "wrk connections",
                "ylabel": "goodput, successes per second",
                "ylim": [0, None],
                "legend": True,
            },
            {
                "title": "Latency, p99",
                "series": latency,
                "hlines": [
                    {
                        "y": targets["ok_p99_ratio"] * cap["ok_p99_ms"],
                        "color": "#2a7ab9",
                        "label": f"{targets['ok_p99_ratio']:.0f} × success p99 at capacity",
                    },
                    {
                        "y": targets["shed_p99_ms"],
                        "color": "#555555",
                        "linestyle": ":",
                        "label": f"shed p99 target, {targets['shed_p99_ms']:.0f} ms",
                    },
                ],
                "xscale": "log2",
                "yscale": "log",
                "xlabel": "wrk connections",
                "ylabel": "ms",
                "legend": True,
            },
        ],
    }
