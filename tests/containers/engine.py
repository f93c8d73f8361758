"""The container engine the suite drives: which one, the flags this machine needs, and plain calls.

mk/containers.mk picks the engine the same way for `make images` (docker when
its daemon answers, else podman; CONTAINER_ENGINE overrides), and the suite
hands its choice to make, so both use one engine.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

PODMAN_ULIMIT_CAP = 32768
DEFAULT_PODMAN_RUNTIME = "runc"


@dataclass(frozen=True)
class Engine:
    name: str  # "podman" or "docker"

    @property
    def is_podman(self) -> bool:
        return os.path.basename(self.name) == "podman"

    def command(self, *args: str) -> list[str]:
        """The engine's argv. Podman gets runc (crun refuses hybrid cgroup v1
        hosts); PODMAN_RUNTIME= (empty) keeps podman's own choice, as in make."""
        runtime = os.environ.get("PODMAN_RUNTIME", DEFAULT_PODMAN_RUNTIME)
        prefix = [self.name, "--runtime", runtime] if self.is_podman and runtime else [self.name]
        return [*prefix, *args]

    def run_limits(self) -> list[str]:
        """--ulimit flags podman can grant here (mk/containers.mk does the same):
        its defaults exceed this machine's hard limits, and then the container
        does not start. A container gets no more than podman runs with: the
        hard limit, and for nproc at most PODMAN_ULIMIT_CAP, podman's own cap.
        Docker applies its daemon's limits, so it gets none."""
        if not self.is_podman:
            return []
        flags = []
        for name, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
            hard = resource.getrlimit(limit)[1]
            value = (
                PODMAN_ULIMIT_CAP
                if hard == resource.RLIM_INFINITY
                else min(hard, PODMAN_ULIMIT_CAP)
            )
            flags += ["--ulimit", f"{name}={value}:{value}"]
        return flags

    def build_flags(self) -> list[str]:
        """What mk/containers.mk's BUILD_FLAGS adds to a podman build: the host's network, the
        docker image format (OCI drops HEALTHCHECK), and ulimits it can grant here."""
        if not self.is_podman:
            return []
        return ["--network", "host", "--format", "docker", *self.run_limits()]

    def read_only_flags(self) -> list[str]:
        """A read-only root with no writable path but the pod's own volumes.
        Podman's --read-only adds tmpfs on /tmp, /run and /var/tmp unless told not to."""
        return ["--read-only", "--read-only-tmpfs=false"] if self.is_podman else ["--read-only"]

    def __call__(
        self, *args: str, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise EngineError(self.command(*args), proc)
        return proc


class EngineError(RuntimeError):
    def __init__(self, argv: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"`{' '.join(argv)}` exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- "
            f"stderr\n{proc.stderr[-4000:]}"
        )


def _answers(argv: Sequence[str]) -> bool:
    try:
        return (
            subprocess.run(list(argv), capture_output=True, timeout=60, check=False).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def detect() -> tuple[Engine | None, str]:
    """(engine, "") or (None, why there is none)."""
    chosen = os.environ.get("CONTAINER_ENGINE", "").strip()
    if chosen:
        engine = Engine(chosen)
        if not shutil.which(chosen):
            return None, f"CONTAINER_ENGINE={chosen} is not installed"
        if not _answers(engine.command("info")):
            return None, f"CONTAINER_ENGINE={chosen}: `{chosen} info` fails"
        return engine, ""
    if shutil.which("docker") and _answers(["docker", "info"]):
        return Engine("docker"), ""
    if shutil.which("podman"):
        engine = Engine("podman")
        if _answers(engine.command("info")):
            return engine, ""
        return None, "`podman info` fails"
    return None, "neither a Docker daemon nor podman is available (CI installs podman: see .ci/run)"
