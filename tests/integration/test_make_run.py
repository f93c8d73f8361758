"""`make run` as people use it: `python -m tandem_localstack` with their environment.

Their OTEL_* and TANDEM_* settings reach the services, but those that would undo the
launcher's wiring; each of the six ports is set by a variable; a malformed one, or a
port already taken, stops it before the banner in one line.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tandem_collector.ports import free_ports
from tandem_localstack import loopback_url
from tandem_tracecheck import TempoClient
from tests.support import refused_port

pytestmark = pytest.mark.local_stack

BANNER = "Tandem is running"
PORT_VARIABLES = (
    "PORT",
    "INTERNAL_PORT",
    "TANDEM_RUN_WORKER_PORT",
    "TANDEM_COLLECTOR_GRPC_PORT",
    "TANDEM_COLLECTOR_QUERY_PORT",
    "TANDEM_COLLECTOR_PROMETHEUS_PORT",
)
B3_TRACE_ID = "463ac35c9f6413ad48485a3953bb6124"


@dataclass
class Launch:
    """A running `python -m tandem_localstack`, its output read as it comes."""

    popen: subprocess.Popen[str]
    logdir: Path
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    # Set at the banner, or when the launcher's stdout ends (it exited).
    settled: threading.Event = field(default_factory=threading.Event)
    banner: threading.Event = field(default_factory=threading.Event)
    readers: list[threading.Thread] = field(default_factory=list)

    def read(self, stream: str) -> None:
        pipe = getattr(self.popen, stream)
        lines = getattr(self, stream)
        for line in pipe:
            lines.append(line.rstrip("\n"))
            if stream == "stdout" and BANNER in line:
                self.banner.set()
                self.settled.set()
        if stream == "stdout":
            self.settled.set()

    def wait_settled(self, timeout: float = 90) -> None:
        assert self.settled.wait(timeout), f"neither a banner nor an exit: {self.output()}"

    def finish(self, timeout: float = 60) -> int:
        """Its exit code, once it and its output have ended."""
        code = self.popen.wait(timeout)
        for reader in self.readers:
            reader.join(timeout)
        return code

    def output(self) -> str:
        return "\n".join(["stdout:", *self.stdout, "stderr:", *self.stderr])

    def log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")


@contextmanager
def launched(env: dict[str, str], logdir: Path) -> Iterator[Launch]:
    """`python -m tandem_localstack` with `env` over this environment's, less its own OTEL_* and
    TANDEM_* (but TANDEM_FAST_PATH, which CI varies); stopped as Ctrl-C stops it."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "TANDEM_")) or k == "TANDEM_FAST_PATH"
    }
    popen = subprocess.Popen(
        [sys.executable, "-m", "tandem_localstack"],
        env={**base, "TANDEM_RUN_DIR": str(logdir), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    launch = Launch(popen, logdir)
    for stream in ("stdout", "stderr"):
        reader = threading.Thread(target=launch.read, args=(stream,), daemon=True)
        launch.readers.append(reader)
        reader.start()
    try:
        yield launch
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)  # as Ctrl-C: the launcher stops its processes in order
        try:
            popen.wait(60)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def free_run_ports() -> dict[str, str]:
    return {name: str(port) for name, port in zip(PORT_VARIABLES, free_ports(6), strict=True)}


def test_settings_and_ports_reach_the_services(tmp_path: Path) -> None:
    ports = free_run_ports()
    with refused_port() as nowhere:
        env = {
            **ports,
            # Roots unsampled; a B3 caller's sampled trace continues, sampled.
            "OTEL_TRACES_SAMPLER": "parentbased_always_off",
            "OTEL_PROPAGATORS": "tracecontext,baggage,b3multi",
            # /readyz traced: it then answers with a traceresponse.
            "TANDEM_UNTRACED_PATHS": "/healthz",
            # The launcher's wiring wins over these two, and it says so.
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{nowhere}",
            "OTEL_SERVICE_NAME": "mine",
        }
        with launched(env, tmp_path) as launch:
            launch.wait_settled()
            assert launch.banner.is_set(), launch.output()
            gateway = loopback_url(int(ports["PORT"]))
            with httpx.Client(base_url=gateway, timeout=30) as client:
                root = client.get("/api/work", params={"tasks": 1})
                assert root.status_code == 200, root.text
                # The worker answered, and its quota call reached the gateway's internal port.
                assert root.json()["results"][0]["quota"]["allowed"] is True
                flags = int(root.headers["traceresponse"].rsplit("-", 1)[1], 16)
                assert not flags & 0x01, "OTEL_TRACES_SAMPLER did not reach the gateway"
                b3 = client.get(
                    "/api/work",
                    params={"tasks": 1},
                    headers={
                        "X-B3-TraceId": B3_TRACE_ID,
                        "X-B3-SpanId": "a2fb4a1d1a96d312",
                        "X-B3-Sampled": "1",
                    },
                )
                _, trace_id, _, b3_flags = b3.headers["traceresponse"].split("-")
                assert trace_id == B3_TRACE_ID, "OTEL_PROPAGATORS did not reach the gateway"
                assert int(b3_flags, 16) & 0x01
                assert "traceresponse" in client.get("/readyz").headers, (
                    "TANDEM_UNTRACED_PATHS did not reach the gateway"
                )
            # Every port is the one asked for.
            for variable, log in (
                ("PORT", "gateway"),
                ("INTERNAL_PORT", "gateway"),
                ("TANDEM_RUN_WORKER_PORT", "worker"),
            ):
                running = f"Running on http://127.0.0.1:{ports[variable]} "
                assert running in launch.log(log), f"{variable}: {launch.log(log)}"
            worker = loopback_url(int(ports["TANDEM_RUN_WORKER_PORT"]))
            assert httpx.get(f"{worker}/readyz", timeout=10).status_code == 200
            metrics = loopback_url(int(ports["TANDEM_COLLECTOR_PROMETHEUS_PORT"]))
            assert httpx.get(f"{metrics}/metrics", timeout=10).status_code == 200
            # The trace reached this run's collector (its OTLP and Tempo ports), under the
            # services' own names.
            tempo_url = loopback_url(int(ports["TANDEM_COLLECTOR_QUERY_PORT"]))
            with TempoClient(tempo_url) as tempo:
                spans = tempo.wait_for_trace(B3_TRACE_ID, spans=7, timeout=60, settle=0.2)
            assert len(spans) == 7
            assert {span.service for span in spans} == {"gateway", "worker"}
            otlp = f"OTLP http://127.0.0.1:{ports['TANDEM_COLLECTOR_GRPC_PORT']} (gRPC)"
            assert otlp in launch.output()
        assert launch.finish() == 0, launch.output()
    notice = [line for line in launch.stderr if line.startswith("make run: not passed on:")]
    assert len(notice) == 1, launch.output()
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in notice[0] and "OTEL_SERVICE_NAME" in notice[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PORT", "eighty"), ("TANDEM_RUN_WORKER_PORT", "70000"), ("TANDEM_COLLECTOR_GRPC_PORT", "0")],
)
def test_a_malformed_port_stops_it_in_one_line(tmp_path: Path, variable: str, value: str) -> None:
    with launched({**free_run_ports(), variable: value}, tmp_path) as launch:
        launch.wait_settled()
        assert launch.finish() == 1, launch.output()
    assert not launch.banner.is_set(), launch.output()
    assert launch.stderr == [
        f"make run: {variable}={value!r} must be a whole number from 1 to 65535"
    ], launch.output()


def test_a_port_in_use_stops_it_before_the_banner_in_one_line(tmp_path: Path) -> None:
    ports = free_run_ports()
    taken = int(ports["TANDEM_COLLECTOR_GRPC_PORT"])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        with launched(ports, tmp_path) as launch:
            launch.wait_settled()
            assert launch.finish() == 1, launch.output()
    assert not launch.banner.is_set() and launch.stdout == [], launch.output()
    assert len(launch.stderr) == 1, launch.output()
    line = launch.stderr[0]
    assert line.startswith(f"make run: port {taken} (TANDEM_COLLECTOR_GRPC_PORT, "), line
    # The holder is this test's process.
    assert f" in use by pid {os.getpid()} (" in line, line


def test_make_e2e_and_the_readme_agree_with_make_runs_ports() -> None:
    """`make e2e`'s defaults are `make run`'s ports, and the README's table names each."""
    run = importlib.import_module("tandem_localstack.run")
    default = {p.variable: p.default for p in run.RUN_PORTS}
    assert tuple(default) == PORT_VARIABLES
    repo = Path(__file__).parents[2]
    mk = dict(
        re.findall(r"^(\w+)\s*\?=\s*(\S+)$", (repo / "mk" / "kubernetes.mk").read_text(), re.M)
    )
    assert mk["GATEWAY_URL"] == loopback_url(default["PORT"])
    assert mk["GATEWAY_INTERNAL_PORT"] == str(default["INTERNAL_PORT"])
    assert mk["TEMPO_URL"] == loopback_url(default["TANDEM_COLLECTOR_QUERY_PORT"])
    assert (
        mk["METRICS_URL"] == loopback_url(default["TANDEM_COLLECTOR_PROMETHEUS_PORT"]) + "/metrics"
    )
    readme = (repo / "README.md").read_text()
    for variable, port in default.items():
        assert re.search(rf"^\| [^|]+ \| `{variable}`[^|]* \| {port} \|$", readme, re.M), variable
