"""What `make run` takes from its environment: six ports, and settings for the services.

Each port is set by a variable: the gateway's own two (PORT, INTERNAL_PORT), the
collector's own three (TANDEM_COLLECTOR_*_PORT, see tandem_collector.config), and
TANDEM_RUN_WORKER_PORT for the worker, whose own PORT the gateway's takes. The
defaults are the services' (one source of truth, which the chart's tests share).
Every port is checked free before anything starts; a taken one is named in one
line, with the process holding it when /proc tells.

The user's OTEL_* and TANDEM_* variables reach the services, but those that would
undo the launcher's wiring (`LAUNCHER_OWNED`): where the spans go, the services'
names, the collector's address and plaintext.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.settings import INTERNAL_LISTENER, PUBLIC_LISTENER
from tandem_collector.config import Config, env_name
from tandem_telemetry.env import InvalidEnvVar, env_int
from worker.settings import DEFAULT_PORT as WORKER_DEFAULT_PORT

HOST = "127.0.0.1"
# The launcher's own variables: read here, passed to no process.
RUN_PREFIX = "TANDEM_RUN_"


@dataclass(frozen=True)
class RunPort:
    """One of the ports `make run` listens on: the variable that sets it, its default, whose."""

    variable: str
    default: int
    role: str

    def from_env(self) -> int:
        """The port; InvalidEnvVar names a malformed one."""
        return env_int(self.variable, self.default, minimum=1, maximum=65535)


_COLLECTOR = Config()
GATEWAY = RunPort(PUBLIC_LISTENER.port_variable, PUBLIC_LISTENER.default_port, "gateway")
GATEWAY_INTERNAL = RunPort(
    INTERNAL_LISTENER.port_variable, INTERNAL_LISTENER.default_port, "gateway, internal"
)
WORKER = RunPort(f"{RUN_PREFIX}WORKER_PORT", WORKER_DEFAULT_PORT, "worker")
OTLP = RunPort(env_name("grpc_port"), _COLLECTOR.grpc_port, "collector, OTLP/gRPC")
TEMPO = RunPort(env_name("query_port"), _COLLECTOR.query_port, "collector, Tempo API")
METRICS = RunPort(env_name("prometheus_port"), _COLLECTOR.prometheus_port, "collector, metrics")
RUN_PORTS = (GATEWAY, GATEWAY_INTERNAL, WORKER, OTLP, TEMPO, METRICS)

_OTLP_CONNECTION = ("ENDPOINT", "INSECURE", "CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE")
# Variables of the user's that `make run` does not pass on, with the reason it says.
LAUNCHER_OWNED: Mapping[str, str] = {
    **{
        f"OTEL_EXPORTER_OTLP_{signal}{name}": "the services export to this run's collector"
        for signal in ("", "TRACES_", "METRICS_")
        for name in _OTLP_CONNECTION
    },
    "OTEL_SERVICE_NAME": "each service keeps its own name",
    env_name("host"): "everything listens on loopback",
    env_name("tls_cert"): "the collector takes plaintext OTLP on loopback",
    env_name("tls_key"): "the collector takes plaintext OTLP on loopback",
}


def read_ports() -> dict[RunPort, int]:
    """Each port from its variable; InvalidEnvVar names a malformed one, or two that agree."""
    ports: dict[RunPort, int] = {}
    for run_port in RUN_PORTS:
        port = run_port.from_env()
        for other, taken in ports.items():
            if taken == port:
                raise InvalidEnvVar(
                    f"{other.variable} and {run_port.variable} are both {port}: "
                    "each needs a port of its own"
                )
        ports[run_port] = port
    return ports


def passed_settings(environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The user's OTEL_* and TANDEM_* variables for the services, and those not passed on
    (set and not blank), each with its reason."""
    settings: dict[str, str] = {}
    ignored: list[str] = []
    for name, value in sorted(environ.items()):
        if not name.startswith(("OTEL_", "TANDEM_")) or name.startswith(RUN_PREFIX):
            continue
        reason = LAUNCHER_OWNED.get(name)
        if reason is None:
            settings[name] = value
        elif value.strip():
            ignored.append(f"{name} ({reason})")
    return settings, ignored


def unavailable(ports: Mapping[RunPort, int], host: str = HOST) -> str | None:
    """None if every port can be listened on now; else one line that names what is in the way.

    Each is bound as the servers bind (SO_REUSEADDR: a connection of an earlier run
    waiting in TIME_WAIT does not count), all at once, then let go.
    """
    failures: list[tuple[RunPort, int, OSError]] = []
    held: list[socket.socket] = []
    try:
        for run_port, port in ports.items():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                failures.append((run_port, port, exc))
    finally:
        for sock in held:
            sock.close()
    if not failures:
        return None
    run_port, port, error = failures[0]
    if error.errno == errno.EADDRINUSE:
        holder = port_holder(port)
        line = f"port {port} ({run_port.variable}, {run_port.role}) is in use" + (
            f" by {holder}" if holder else ""
        )
    else:
        line = f"cannot listen on {host}:{port} ({run_port.variable}, {run_port.role}): " + (
            error.strerror or str(error)
        )
    line += f"; stop what holds it, or set {run_port.variable} to another port"
    if len(failures) > 1:
        line += "; also unavailable: " + ", ".join(
            f"{port} ({run_port.variable})" for run_port, port, _ in failures[1:]
        )
    return line


def port_holder(port: int, proc: Path = Path("/proc")) -> str | None:
    """`pid N (command line)` of a process with a TCP socket bound to `port`, if /proc says.

    The socket's inode from /proc/net/tcp and tcp6, then the process whose fd links
    to it; a process of another user's cannot be seen, and then None.
    """
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local address (hex ip:port), state, ..., inode; 0A is LISTEN, 07 bound (CLOSE).
            if len(fields) < 10 or fields[3] not in ("0A", "07") or fields[9] == "0":
                continue
            if int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    try:
        pids = [entry for entry in proc.iterdir() if entry.name.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            fds = list((pid / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) not in inodes:
                    continue
                command = (pid / "cmdline").read_bytes().replace(b"\0", b" ").strip()
            except OSError:
                continue
            text = " ".join(command.decode(errors="replace").split())  # one line
            return f"pid {pid.name} ({text[:120]}{'...' if len(text) > 120 else ''})"
    return None
