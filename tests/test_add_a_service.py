"""docs/add-a-service.md is true: its ledger, applied to a copy of the repository, runs beside
the gateway and the worker, and its spans join the gateway's trace.

The copy runs as `make run` runs it (`python -m tandem_localstack`, which the guide teaches to
start the ledger), on free ports, with the copy's packages first on PYTHONPATH; then
`python -m tandem_tracecheck` from the copy, the checks `helm test` runs, with the guide's
extended tree. The copy also passes `make lint`'s ruff and mypy. The image and the chart's pod
are tests/containers/test_add_a_service.py's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tandem_collector.ports import free_ports
from tandem_localstack import run
from tandem_tracecheck import TempoClient, check_tree, work_trace
from tandem_tracecheck.scenarios import new_traceparent
from tests import guide

# The launcher prints its banner once every process answers /readyz.
READY_LINE = "Tandem is running"
START_TIMEOUT = 90.0


@dataclass
class RunningCopy:
    copy: Path
    env: dict[str, str]
    ports: dict[run.RunPort, int]

    def url(self, port: run.RunPort) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"


@pytest.fixture(scope="module")
def guide_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository with the guide applied."""
    copy = tmp_path_factory.mktemp("guide") / "repo"
    guide.apply(copy)
    return copy


@pytest.fixture(scope="module")
def running_copy(
    guide_copy: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningCopy]:
    """The copy running as `make run` runs it, until the module's tests are done."""
    copy = guide_copy
    ports = dict(zip(run.RUN_PORTS, free_ports(len(run.RUN_PORTS)), strict=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TANDEM_"))}
    env.update({port.variable: str(number) for port, number in ports.items()})
    env["TANDEM_RUN_DIR"] = str(tmp_path_factory.mktemp("guide-run"))
    env["PYTHONPATH"] = guide.source_path(copy)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "tandem_localstack"],
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Read the launcher's output to its end (the collector draws every trace there, and a
    # full pipe would stall it); `ready` is set by the banner, or by the launcher's exit.
    output: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert launcher.stdout is not None
        for line in launcher.stdout:
            output.append(line)
            if line.startswith(READY_LINE):
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(START_TIMEOUT)
        if launcher.poll() is not None or not any(READY_LINE in line for line in output):
            pytest.fail(
                "the guide's copy did not start within "
                f"{START_TIMEOUT:.0f} s:\n{''.join(output)[-6000:]}",
                pytrace=False,
            )
        yield RunningCopy(copy, env, ports)
    finally:
        launcher.send_signal(signal.SIGINT)
        code = launcher.wait(60)
        reader.join(10)
    assert code == 0, f"the launcher stopped with {code}:\n{''.join(output)[-6000:]}"


def test_tracecheck_with_the_guides_tree_passes(running_copy: RunningCopy) -> None:
    """The end-to-end checks from the copy: every trace matches the extended tree exactly."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tandem_tracecheck",
            "--gateway-url",
            running_copy.url(run.GATEWAY),
            "--gateway-internal-port",
            str(running_copy.ports[run.GATEWAY_INTERNAL]),
            "--tempo-url",
            running_copy.url(run.TEMPO),
            "--metrics-url",
            f"{running_copy.url(run.METRICS)}/metrics",
            "--trace-timeout",
            "30",
        ],
        env=running_copy.env,
        cwd=running_copy.copy,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   linked span tree, tasks=1" in proc.stdout, proc.stdout
    assert " 0 failed" in proc.stdout, proc.stdout


def test_the_ledgers_spans_join_the_gateways_trace(running_copy: RunningCopy) -> None:
    """One request with a caller's traceparent: the ledger's SERVER span is the child of a
    gateway CLIENT span in the caller's trace; the guide's tree matches it, Tandem's own
    tree (without the ledger) does not."""
    traceparent, trace_id, span_id = new_traceparent()
    response = httpx.get(
        f"{running_copy.url(run.GATEWAY)}/api/work",
        params={"tasks": 1},
        headers={"traceparent": traceparent},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["trace_id"] == trace_id and response.json()["entry"] >= 1

    tree = guide.tree_module(running_copy.copy)
    extended = tree.work_trace(1)
    with TempoClient(running_copy.url(run.TEMPO)) as tempo:
        spans = tempo.wait_for_trace(trace_id, spans=extended.size(), timeout=30)
    by_id = {span.span_id: span for span in spans}
    ledger = [s for s in spans if s.service == "ledger"]
    assert sorted((s.kind, s.name) for s in ledger) == [
        ("INTERNAL", "record entry"),
        ("SERVER", "POST /entries"),
    ], ledger
    server, own = sorted(ledger, key=lambda s: s.kind != "SERVER")
    caller = by_id.get(server.parent_span_id or "")
    assert caller is not None and (caller.service, caller.kind) == ("gateway", "CLIENT")
    assert own.parent_span_id == server.span_id

    matched = tree.check_tree(spans, extended, root_parent=span_id, trace_id=trace_id)
    assert matched.problems == []
    assert matched.links_by_structure == 4  # caller, worker, quota, ledger
    without = check_tree(spans, work_trace(1), root_parent=span_id, trace_id=trace_id).problems
    assert any("unexpected spans" in p and "ledger" in p for p in without), without


def test_the_guides_code_is_lint_and_type_clean(guide_copy: Path) -> None:
    """What the guide has a reader write passes `make lint` in the copy: ruff, its formatter,
    and mypy over the files the guide adds to its configuration."""
    bin_dir = Path(sys.executable).parent
    # mypy finds the copy's packages (the ledger's among them) before the venv's installs.
    env = {**os.environ, "MYPYPATH": guide.source_path(guide_copy)}
    for command in (
        [str(bin_dir / "ruff"), "check", "."],
        [str(bin_dir / "ruff"), "format", "--check", "."],
        [str(bin_dir / "mypy")],
    ):
        proc = subprocess.run(
            command, cwd=guide_copy, env=env, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, f"{' '.join(command)}:\n{proc.stdout}{proc.stderr}"
    assert "services/ledger/src" in (guide_copy / "pyproject.toml").read_text()
