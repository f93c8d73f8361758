"""Fixtures for the collector tests: an in-process collector and a subprocess one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tandem_collector.ports import free_ports
from tandem_collector.testing import RunningCollector, running_collector


@pytest.fixture
def collector() -> Iterator[RunningCollector]:
    """A fresh in-process collector on OS-chosen ports, quiet."""
    with running_collector() as running:
        yield running


@dataclass
class CollectorProcess:
    process: subprocess.Popen[bytes]
    grpc_port: int
    query_port: int
    prometheus_port: int
    stdout_path: Path
    stderr_path: Path

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8")


def start_collector_process(tmp_path: Path, *extra: str) -> CollectorProcess:
    grpc_port, query_port, prometheus_port = free_ports(3)
    stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    # Output goes to files, not pipes, so a full pipe can never wedge the collector.
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tandem_collector",
                "--host",
                "127.0.0.1",
                "--grpc-port",
                str(grpc_port),
                "--query-port",
                str(query_port),
                "--prometheus-port",
                str(prometheus_port),
                *extra,
            ],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    proc = CollectorProcess(
        process, grpc_port, query_port, prometheus_port, stdout_path, stderr_path
    )
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise AssertionError(f"collector exited early ({process.returncode}): {proc.stderr()}")
        try:
            if httpx.get(f"{proc.query_url}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"collector never became ready: {proc.stderr()}")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def start_collector(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., CollectorProcess]:
    """Start ``python -m tandem_collector *args`` on free ports; always stopped afterwards."""
    counter = iter(range(1_000))

    def start(*args: str) -> CollectorProcess:
        directory = tmp_path / f"collector-{next(counter)}"
        directory.mkdir()
        proc = start_collector_process(directory, *args)
        request.addfinalizer(lambda: stop_process(proc.process))
        return proc

    return start


@pytest.fixture
def collector_process(start_collector: Callable[..., CollectorProcess]) -> CollectorProcess:
    """``python -m tandem_collector`` on free ports, settle 0.2 s, waterfalls on."""
    return start_collector("--settle-seconds", "0.2")
