"""A service's output is JSON lines only: hypercorn's own messages too, each once."""

from __future__ import annotations

import json

import pytest

from tandem_localstack import Collector, Stack

pytestmark = pytest.mark.local_stack


def test_every_line_a_service_writes_is_json_and_hypercorns_come_once(
    stack: Stack, collector: Collector
) -> None:
    pair = stack.start_pair(collector, suffix="-logs")
    # Stopped: everything each wrote, from its start to its last flush, is in its log.
    assert pair.gateway.stop() == 0
    assert pair.worker.stop() == 0
    listeners = [
        (pair.gateway, (pair.ports.gateway, pair.ports.gateway_internal)),
        (pair.worker, (pair.ports.worker,)),
    ]
    for process, ports in listeners:
        output = process.output()
        lines = [line for line in output.splitlines() if line.strip()]
        assert lines, f"{process.name} wrote nothing"
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                pytest.fail(f"{process.name} wrote a line that is not JSON: {line!r}\n{output}")
            assert isinstance(entry, dict) and "message" in entry, line
        messages = [json.loads(line)["message"] for line in lines]
        for port in ports:
            running = [m for m in messages if m.startswith(f"Running on http://127.0.0.1:{port} ")]
            assert len(running) == 1, f"{process.name}, port {port}:\n{output}"
        assert sum("Running on" in line for line in lines) == len(ports), output
