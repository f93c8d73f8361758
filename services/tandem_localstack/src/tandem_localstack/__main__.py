"""`python -m tandem_localstack` (`make run`): the collector, worker and gateway on loopback.

Each finished trace is drawn in the terminal as a waterfall; Ctrl-C stops them all,
the collector last, so it receives the services' final exports.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from tandem_collector.ports import free_ports
from tandem_localstack import run
from tandem_localstack.stack import Collector, OtelcolPorts, PairPorts, Stack
from tandem_telemetry.env import InvalidEnvVar, env_str

# Set by `make run COLLECTOR=otelcol`: the real Collector's binary, and the chart's config.
OTELCOL_BINARY = f"{run.RUN_PREFIX}OTELCOL"
OTELCOL_CONFIG = f"{run.RUN_PREFIX}OTELCOL_CONFIG"


def main() -> int:
    """`make run`: check the ports, start everything, print where, stop cleanly on Ctrl-C.

    The ports and settings come from the environment (tandem_localstack.run);
    a malformed port variable, or a port already taken, stops it in one line.
    """
    try:
        ports = run.read_ports()
        otelcol = real_collector(os.environ)
    except InvalidEnvVar as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    problem = run.unavailable(ports)
    if problem:
        print(f"make run: {problem}", file=sys.stderr)
        return 1
    settings, ignored = run.passed_settings(os.environ)
    if ignored:
        print(f"make run: not passed on: {'; '.join(ignored)}", file=sys.stderr)
    logdir = Path(env_str("TANDEM_RUN_DIR", ".run"))
    logdir.mkdir(exist_ok=True)
    stack = Stack(logdir, settings=settings)
    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        if otelcol is None:
            collector = stack.start_collector(
                {
                    "grpc": ports[run.OTLP],
                    "query": ports[run.TEMPO],
                    "prometheus": ports[run.METRICS],
                },
                log=False,
            )
            collector_lines = (
                f"  collector  OTLP {collector.grpc_endpoint} (gRPC), "
                f"Tempo API {collector.tempo_url},\n             metrics {collector.metrics_url}"
            )
        else:
            collector, collector_lines = start_real_collector(stack, ports, *otelcol, logdir)
        pair = stack.start_pair(
            collector,
            PairPorts(ports[run.GATEWAY], ports[run.GATEWAY_INTERNAL], ports[run.WORKER]),
        )
    except RuntimeError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        stack.stop_all()
        return 1
    print(
        f"""
Tandem is running on loopback:
  gateway    {pair.gateway_url}          (logs: {logdir}/gateway.log)
             {pair.gateway_internal_url}          internal: /internal/quota, for the worker
  worker     {pair.worker_url}          (logs: {logdir}/worker.log)
{collector_lines}

Try:
  curl '{pair.gateway_url}/api/work?tasks=3'
Each finished trace is drawn below as a waterfall. Ctrl-C stops them all.
""",
        flush=True,
    )
    while not stopping.wait(0.5):
        exited = [p for p in stack.processes if p.popen.poll() is not None]
        if exited:
            print(
                f"make run: {exited[0].name} exited with {exited[0].popen.returncode}; "
                "stopping the rest",
                file=sys.stderr,
            )
            break
    print("stopping: gateway, worker, then the collector (after their last spans)", flush=True)
    stack.stop_all()
    return 0 if stopping.is_set() else 1


def real_collector(environ: Mapping[str, str]) -> tuple[Path, Path] | None:
    """The real Collector's binary and configuration, when `make run COLLECTOR=otelcol` asks
    for it; InvalidEnvVar names a path that is not there."""
    binary = environ.get(OTELCOL_BINARY, "").strip()
    config = environ.get(OTELCOL_CONFIG, "").strip()
    if not binary:
        if config:
            raise InvalidEnvVar(f"{OTELCOL_CONFIG} is set without {OTELCOL_BINARY}, the binary")
        return None
    if not Path(binary).is_file():
        raise InvalidEnvVar(f"{OTELCOL_BINARY}={binary!r} is not a file (make collector builds it)")
    if not Path(config).is_file():
        raise InvalidEnvVar(f"{OTELCOL_CONFIG}={config!r} is not a Collector configuration file")
    return Path(binary), Path(config)


def start_real_collector(
    stack: Stack, ports: dict[run.RunPort, int], binary: Path, config: Path, logdir: Path
) -> tuple[Collector, str]:
    """The stand-in as the trace store (Tempo API on its port, OTLP on a free one), the real
    Collector on the OTLP and metrics ports: the services see no difference."""
    store_grpc, store_metrics, http, health, telemetry = free_ports(5)
    store = stack.start_collector(
        {"grpc": store_grpc, "query": ports[run.TEMPO], "prometheus": store_metrics},
        log=False,
        name="store",
    )
    otelcol_ports = OtelcolPorts(ports[run.OTLP], http, health, ports[run.METRICS], telemetry)
    collector = stack.start_otelcol(binary, config, store, otelcol_ports)
    lines = (
        f"  collector  the real OpenTelemetry Collector ({binary.name}) running {config}:\n"
        f"             OTLP {collector.grpc_endpoint} (gRPC), metrics {collector.metrics_url},\n"
        f"             health {otelcol_ports.health_url}    (logs: {logdir}/otelcol.log)\n"
        f"  traces     the local store, Tempo API {collector.tempo_url}"
    )
    return collector, lines


if __name__ == "__main__":
    raise SystemExit(main())
