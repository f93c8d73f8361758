"""What every section measures with: the machine, its processes, rounds, settled counters.

Sections (benchmarks.harness, benchmarks.overload, benchmarks.micro) import this module and
never each other, nor the renderer (benchmarks.render).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import loadgen
from tandem_localstack import Collector, Process, Stack, free_collector_ports, loopback_url

REPO = Path(__file__).resolve().parent.parent

# The batch span processor and metric settings of every traced process in every section.
TELEMETRY_ENV = {
    "OTEL_BSP_MAX_QUEUE_SIZE": "8192",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512",
    "OTEL_BSP_SCHEDULE_DELAY": "1000",
    "OTEL_METRIC_EXPORT_INTERVAL": "5000",
    "TANDEM_FAST_PATH": "auto",
}
# Only the smoke sizes export faster, so that their collectors settle in a second or two.
SMOKE_EXPORT = (("OTEL_BSP_SCHEDULE_DELAY", "200"), ("OTEL_METRIC_EXPORT_INTERVAL", "500"))

PACKAGES = (
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
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine_info(generator: str) -> dict[str, Any]:
    from importlib import metadata

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "-"
    loadgen_version = "python stand-in (aiohttp), not wrk"
    wrk = loadgen.wrk_path() if generator == "wrk" else None
    if wrk:
        done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        lines = (done.stdout or done.stderr).splitlines()
        loadgen_version = lines[0].strip() if lines else "-"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadgen": loadgen_version,
        "packages": versions,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def rotated(names: list[str], round_index: int) -> list[str]:
    """`names`, starting at a different one each round, so that drift falls on all alike."""
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH")
    return f"{REPO}{os.pathsep}{existing}" if existing else str(REPO)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


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
    """A Stack plus the bookkeeping a section needs: start many, then wait for all."""

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
            "PYTHONPATH": pythonpath(),
            **self.telemetry_env,
            **env,
        }
        process = self.stack.start(name, module, full_env)
        self.expect_ready(process, f"http://127.0.0.1:{port}/readyz")
        return process

    def pair(
        self, suffix: str, collector: Collector, env: dict[str, str], *, gateway_app: str = ""
    ) -> tuple[Process, Process, int]:
        """A worker and a gateway wired to each other, both with `env`: (gateway, worker, the
        gateway's port). `gateway_app`: serve benchmarks.contrib_services' wiring instead."""
        from tandem_collector.ports import free_ports

        gateway_port, gateway_internal_port, worker_port = free_ports(3)
        gateway_env, worker_env = pair_env(gateway_port, gateway_internal_port, worker_port)
        if gateway_app:
            apps = {
                "worker": {"BENCH_APP": f"{gateway_app}:worker"},
                "gateway": {
                    "BENCH_APP": f"{gateway_app}:gateway",
                    "BENCH_INTERNAL_APP": f"{gateway_app}:gateway_internal",
                },
            }
            module = "benchmarks.serve"
        else:
            apps, module = {"worker": {}, "gateway": {}}, ""
        worker = self.service(
            f"worker-{suffix}",
            module or "worker",
            worker_port,
            collector,
            {**worker_env, **env, **apps["worker"]},
        )
        gateway = self.service(
            f"gateway-{suffix}",
            module or "gateway",
            gateway_port,
            collector,
            {**gateway_env, **env, **apps["gateway"]},
        )
        return gateway, worker, gateway_port

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


Counters = TypeVar("Counters")


def quiet_for(telemetry_env: dict[str, str]) -> float:
    """How long a collector's counters must stand still before every span and metric is in."""
    return (
        int(telemetry_env["OTEL_METRIC_EXPORT_INTERVAL"]) / 1000
        + int(telemetry_env["OTEL_BSP_SCHEDULE_DELAY"]) / 1000
        + 1
    )


def settled(read: Callable[[], Counters], quiet: float, timeout: float, what: str) -> Counters:
    """`read()` again and again until its value stands still for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last = read()
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return now
    log(f"{what}: collector counters still moving after {timeout:.0f} s; using the last scrape")
    return last
