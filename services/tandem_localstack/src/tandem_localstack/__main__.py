"""`python -m tandem_localstack` (`make run`): the collector, worker and gateway on loopback.

Each finished trace is drawn in the terminal as a waterfall; Ctrl-C stops all three,
the collector last, so it receives the services' final exports.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from tandem_localstack import run
from tandem_localstack.stack import PairPorts, Stack
from tandem_telemetry.env import InvalidEnvVar, env_str


def main() -> int:
    """`make run`: check the ports, start everything, print where, stop cleanly on Ctrl-C.

    The ports and settings come from the environment (tandem_localstack.run);
    a malformed port variable, or a port already taken, stops it in one line.
    """
    try:
        ports = run.read_ports()
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
        collector = stack.start_collector(
            {
                "grpc": ports[run.OTLP],
                "query": ports[run.TEMPO],
                "prometheus": ports[run.METRICS],
            },
            log=False,
        )
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
  collector  OTLP {collector.grpc_endpoint} (gRPC), Tempo API {collector.tempo_url},
             metrics {collector.metrics_url}

Try:
  curl '{pair.gateway_url}/api/work?tasks=3'
Each finished trace is drawn below as a waterfall. Ctrl-C stops all three.
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


if __name__ == "__main__":
    raise SystemExit(main())
