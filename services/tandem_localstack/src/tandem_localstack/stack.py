"""Start the local collector, the worker and the gateway as real processes on loopback.

`python -m tandem_localstack` (`make run`) and the test suites start them through `Stack`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from tandem_collector.ports import free_ports

# Settings the services take from the environment that starts them.
INHERITED_SETTINGS = ("TANDEM_FAST_PATH",)
# Short export intervals, so a trace shows within a second of the request.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_METRIC_EXPORT_INTERVAL": "1000"}


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path | None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log else ""

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; SIGKILL if it will not go."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


@dataclass
class Collector:
    grpc_endpoint: str
    tempo_url: str
    metrics_url: str


LOOPBACK = "127.0.0.1"


def loopback_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


@dataclass(frozen=True)
class OtelcolPorts:
    """Where the real Collector listens: the `OTELCOL_*` variables of the chart's config."""

    grpc: int
    http: int
    health: int
    prometheus: int
    telemetry: int

    @classmethod
    def free(cls) -> OtelcolPorts:
        return cls(*free_ports(5))

    def env(self) -> dict[str, str]:
        """The Collector's listeners on loopback, where the URLs below look for them."""
        return {
            "OTELCOL_OTLP_GRPC_ENDPOINT": f"{LOOPBACK}:{self.grpc}",
            "OTELCOL_OTLP_HTTP_ENDPOINT": f"{LOOPBACK}:{self.http}",
            "OTELCOL_HEALTH_ENDPOINT": f"{LOOPBACK}:{self.health}",
            "OTELCOL_PROMETHEUS_ENDPOINT": f"{LOOPBACK}:{self.prometheus}",
            "OTELCOL_TELEMETRY_HOST": LOOPBACK,
            "OTELCOL_TELEMETRY_PORT": str(self.telemetry),
        }

    @property
    def health_url(self) -> str:
        return f"{loopback_url(self.health)}/"

    @property
    def telemetry_url(self) -> str:
        return f"{loopback_url(self.telemetry)}/metrics"


@dataclass(frozen=True)
class PairPorts:
    """The ports of a gateway and a worker that call each other."""

    gateway: int
    gateway_internal: int
    worker: int

    @classmethod
    def free(cls) -> PairPorts:
        gateway, gateway_internal, worker = free_ports(3)
        return cls(gateway, gateway_internal, worker)


@dataclass
class Pair:
    """A running gateway and worker: the worker's quota calls go to the gateway's internal port."""

    gateway: Process
    worker: Process
    ports: PairPorts

    @property
    def gateway_url(self) -> str:
        return loopback_url(self.ports.gateway)

    @property
    def gateway_internal_url(self) -> str:
        return loopback_url(self.ports.gateway_internal)

    @property
    def worker_url(self) -> str:
        return loopback_url(self.ports.worker)


@dataclass
class Stack:
    """Processes started together; stopped in reverse order, so the collector goes last.

    Each starts from a clean slate of settings: no OTEL_* or TANDEM_* variable of this
    process's environment reaches it (but INHERITED_SETTINGS), so the test suites are
    hermetic. `settings` are given to every process instead (`make run` passes the
    user's there); the wiring each `start_*` sets, and its `env`, win over them.
    """

    logdir: Path
    processes: list[Process] = field(default_factory=list)
    settings: Mapping[str, str] = field(default_factory=dict)

    def start(
        self,
        name: str,
        module: str,
        env: dict[str, str],
        args: tuple[str, ...] = (),
        *,
        log: bool = True,
    ) -> Process:
        """`python -m module args` (see `start_command`)."""
        return self.start_command(name, [sys.executable, "-m", module, *args], env, log=log)

    def start_command(
        self, name: str, command: list[str], env: dict[str, str], *, log: bool = True
    ) -> Process:
        # A clean slate of settings, but for TANDEM_FAST_PATH: CI runs the suites once per path.
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "TANDEM_")) or k in INHERITED_SETTINGS
        }
        full_env.update(self.settings)
        full_env.update(env)
        full_env["PYTHONUNBUFFERED"] = "1"
        # A session of its own: Ctrl-C reaches only the parent, which then
        # stops the children in order, so the collector outlives their last export.
        if log:
            path = self.logdir / f"{name}.log"
            with path.open("wb") as sink:
                popen = subprocess.Popen(
                    command,
                    env=full_env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        else:
            path, popen = None, subprocess.Popen(command, env=full_env, start_new_session=True)
        process = Process(name, popen, path)
        self.processes.append(process)
        return process

    def wait_ready(self, process: Process, url: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise RuntimeError(
                    f"{process.name} exited with {process.popen.returncode}:\n{process.output()}"
                )
            try:
                with urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"{process.name} not ready at {url} after {timeout}s:\n{process.output()}"
        )

    def start_collector(
        self,
        ports: dict[str, int],
        *,
        log: bool = True,
        host: str = "127.0.0.1",
        name: str = "collector",
        args: tuple[str, ...] = (),
    ) -> Collector:
        port_args = [f"--{kind}-port={port}" for kind, port in ports.items()]
        process = self.start(
            name, "tandem_collector", {}, ("--host", host, *port_args, *args), log=log
        )
        tempo_url = f"http://{host}:{ports['query']}"
        self.wait_ready(process, f"{tempo_url}/ready")
        return Collector(
            f"http://{host}:{ports['grpc']}",
            tempo_url,
            f"http://{host}:{ports['prometheus']}/metrics",
        )

    def start_otelcol(
        self,
        binary: Path,
        config: Path,
        store: Collector,
        ports: OtelcolPorts | None = None,
        *,
        name: str = "otelcol",
        log: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Collector:
        """The real Collector, running `config` (the chart's), between the services and `store`.

        Only environment values differ from a cluster: it listens on loopback ports
        (`OTELCOL_*`), and sends traces to the store's OTLP/gRPC port (`TEMPO_OTLP_ENDPOINT`).
        The returned Collector takes the services' OTLP and serves the metrics they export;
        traces are read back from the store's Tempo API. `env` adds to (or overrides) that
        environment: the settings a config of its own reads (two-tier's resolver, sampling).
        """
        ports = ports or OtelcolPorts.free()
        full_env = {
            **ports.env(),
            "TEMPO_OTLP_ENDPOINT": store.grpc_endpoint.split("://", 1)[1],
            **(env or {}),
        }
        process = self.start_command(name, [str(binary), f"--config={config}"], full_env, log=log)
        # health_check answers 200 once every pipeline runs.
        self.wait_ready(process, ports.health_url)
        return Collector(
            loopback_url(ports.grpc), store.tempo_url, f"{loopback_url(ports.prometheus)}/metrics"
        )

    def start_service(
        self,
        module: str,
        port: int,
        collector: Collector,
        *,
        name: str | None = None,
        **env: str,
    ) -> Process:
        """Start `python -m gateway` or `python -m worker` on loopback, exporting to `collector`.

        A gateway alone also needs INTERNAL_PORT (see `start_pair`), or it takes its default.
        """
        base = {
            # Short export intervals, unless the settings choose their own.
            **{name: value for name, value in FAST_EXPORT.items() if name not in self.settings},
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
        }
        process = self.start(name or module, module, {**base, **env})
        self.wait_ready(process, f"{loopback_url(port)}/readyz")
        return process

    def start_pair(
        self,
        collector: Collector,
        ports: PairPorts | None = None,
        *,
        suffix: str = "",
        gateway_env: dict[str, str] | None = None,
        worker_env: dict[str, str] | None = None,
    ) -> Pair:
        """Start a worker and a gateway wired to each other (free ports unless given).

        The worker checks quota on the gateway's internal port; `worker_env`
        and `gateway_env` are added last, so they may override the wiring.
        """
        ports = ports or PairPorts.free()
        worker = self.start_service(
            "worker",
            ports.worker,
            collector,
            name=f"worker{suffix}",
            **{"GATEWAY_INTERNAL_URL": loopback_url(ports.gateway_internal), **(worker_env or {})},
        )
        gateway = self.start_service(
            "gateway",
            ports.gateway,
            collector,
            name=f"gateway{suffix}",
            **{
                "INTERNAL_PORT": str(ports.gateway_internal),
                "WORKER_URL": loopback_url(ports.worker),
                **(gateway_env or {}),
            },
        )
        return Pair(gateway, worker, ports)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def free_collector_ports() -> dict[str, int]:
    return dict(zip(("grpc", "query", "prometheus"), free_ports(3), strict=True))
