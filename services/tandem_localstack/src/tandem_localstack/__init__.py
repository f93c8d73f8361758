"""Tandem on loopback: the local collector, the worker and the gateway, as real processes.

    python -m tandem_localstack        # make run

Tests start the same processes through `Stack`:

    stack = Stack(tmp_path)
    collector = stack.start_collector(free_collector_ports())
    stack.start_service("worker", worker_port, collector, GATEWAY_URL=...)
"""

from tandem_localstack.stack import Collector, Process, Stack, free_collector_ports

__all__ = ["Collector", "Process", "Stack", "free_collector_ports"]
