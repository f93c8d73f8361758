"""Tandem on loopback: the local collector, the worker and the gateway, as real processes.

    python -m tandem_localstack        # make run

Tests start the same processes through `Stack`:

    stack = Stack(tmp_path)
    collector = stack.start_collector(free_collector_ports())
    pair = stack.start_pair(collector)   # a worker and a gateway, on free ports
    pair.gateway_url, pair.gateway_internal_url, pair.worker_url
"""

from tandem_localstack.stack import (
    Collector,
    OtelcolPorts,
    Pair,
    PairPorts,
    Process,
    Stack,
    free_collector_ports,
    loopback_url,
)

__all__ = [
    "Collector",
    "OtelcolPorts",
    "Pair",
    "PairPorts",
    "Process",
    "Stack",
    "free_collector_ports",
    "loopback_url",
]
