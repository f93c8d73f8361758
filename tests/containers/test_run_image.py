"""`make run-image`: the command docs/deploy-kubernetes.md gives to run one image, as pasted.

With podman on a host like CI's (runc, hard limits below podman's default ulimits,
no systemd), a bare `podman run` of the image does not start, or logs two
systemd errors for the image's HEALTHCHECK; the target adds what the host needs.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import time

import pytest

from tests.containers.conftest import APPS, Images, http_status
from tests.containers.engine import Engine
from tests.k8s.conftest import REPO
from tests.support import free_port, make_own_lines

# Bounds a failure only: Ctrl-C stops the service within its shutdown grace.
STOP_TIMEOUT = 120


def test_make_run_image_serves_on_its_port_and_logs_no_systemd_error(
    engine: Engine, images: Images
) -> None:
    version = images.tags["worker"].rsplit(":", 1)[1]
    port = free_port()
    make = subprocess.Popen(
        [
            "make", "--no-print-directory", "run-image", "SERVICE=worker",
            f"HOST_PORT={port}", f"IMAGE_TAG={version}", f"CONTAINER_ENGINE={engine.name}",
        ],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert make.stderr is not None
    logged = []
    try:
        # The engine's own errors come before the service starts; its log says when it listens.
        for line in make.stderr:
            logged.append(line)
            if "Running on http://0.0.0.0:8081" in line:
                break
        # Listening; a loaded machine may still answer slowly.
        deadline = time.monotonic() + 60
        while (status := http_status(f"http://127.0.0.1:{port}/healthz")) != 200:
            assert time.monotonic() < deadline, "".join(logged)
            time.sleep(0.2)
        assert status == 200, "".join(logged)
    finally:
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C, as at a terminal
        out, rest = make.communicate(timeout=STOP_TIMEOUT)
    logged.append(rest)
    assert "systemd" not in "".join(logged), "".join(logged)
    command = " ".join(out.replace("\\\n", " ").split())
    assert f"-p {port}:8081 tandem-worker:{version}" in command
    assert command.startswith(" ".join(engine.command("run", "--rm"))), command
    assert " ".join(engine.run_limits()) in command, command


@pytest.mark.parametrize("service", APPS)
def test_make_run_image_publishes_each_services_default_port(service: str) -> None:
    """SERVICE_PORT_<service> in mk/containers.mk is the service's settings.DEFAULT_PORT."""
    default_port = importlib.import_module(f"{service}.settings").DEFAULT_PORT
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "run-image", f"SERVICE={service}",
         "CONTAINER_ENGINE=docker"],
        cwd=REPO, capture_output=True, text=True, timeout=STOP_TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    command = " ".join(proc.stdout.replace("\\\n", " ").split())
    assert f" -p {default_port}:{default_port} tandem-{service}:" in command, command


def test_make_run_image_without_a_service_is_one_line() -> None:
    proc = subprocess.run(
        ["make", "--no-print-directory", "run-image", "SERVICE=tandem_telemetry"],
        cwd=REPO, capture_output=True, text=True, timeout=STOP_TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert make_own_lines(proc) == [
        f"make run-image: SERVICE=<service>, one of: {' '.join(sorted(APPS))} "
        "(got 'tandem_telemetry')"
    ]
