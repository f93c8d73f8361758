"""`python -m tandem_localstack` (`make run`): the collector, worker and gateway on loopback.

Each finished trace is drawn in the terminal as a waterfall; Ctrl-C stops all three,
the collector last, so it receives the services' final exports.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from gateway.settings import DEFAULT_INTERNAL_PORT as GATEWAY_INTERNAL_PORT
from gateway.settings import DEFAULT_PORT as GATEWAY_PORT
from tandem_collector.config import Config
from tandem_localstack.stack import PairPorts, Stack
from tandem_telemetry.env import env_str
from worker.settings import DEFAULT_PORT as WORKER_PORT


def main() -> int:
    """`make run`: start everything on the default ports, print where, stop cleanly on Ctrl-C."""
    defaults = Config()
    ports = {
        "grpc": defaults.grpc_port,
        "query": defaults.query_port,
        "prometheus": defaults.prometheus_port,
    }
    logdir = Path(env_str("TANDEM_RUN_DIR", ".run"))
    logdir.mkdir(exist_ok=True)
    stack = Stack(logdir)
    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        collector = stack.start_collector(ports, log=False)
        pair = stack.start_pair(
            collector, PairPorts(GATEWAY_PORT, GATEWAY_INTERNAL_PORT, WORKER_PORT)
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
