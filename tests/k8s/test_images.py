"""services/Dockerfile, both images: hadolint-clean, pinned, non-root, fed by fresh lock exports.

tests/containers builds and runs it; these checks read it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.k8s.conftest import REPO, make_expand, run, tool

SERVICES = REPO / "services"
# Which workspace packages each image's lock export covers; mk/kubernetes.mk's
# GATEWAY_EXPORT_PACKAGES / WORKER_EXPORT_PACKAGES say the same. Any other service's
# export is its own project's, tandem-<name>.
EXPORT_PACKAGES = {
    "gateway": ["tandem-gateway", "tandem-tracecheck"],
    "worker": ["tandem-worker"],
}


def image_services(services: Path = SERVICES) -> list[str]:
    """The services with an image: services/<name> whose package src/<name> has __main__.py
    and settings.py (the layout services/Dockerfile checks; mk/containers.mk's
    IMAGE_SERVICES)."""
    return sorted(
        main.parents[2].name
        for main in services.glob("*/src/*/__main__.py")
        if main.parent.name == main.parents[2].name and (main.parent / "settings.py").is_file()
    )


IMAGE_SERVICES = image_services()
UV_EXPORT_FLAGS = [
    "--frozen",
    "--no-dev",
    "--no-emit-workspace",
    "--no-header",
    "--format",
    "requirements.txt",
]
BASE_IMAGE = re.compile(r"^python:3\.12\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$")
DOCKERFILE = SERVICES / "Dockerfile"


def dockerfile() -> str:
    return DOCKERFILE.read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(text):
        if ins[0] == "FROM":
            result.append([])
        if result:  # an ARG before the first FROM belongs to no stage
            result[-1].append(ins)
    return result


def uv() -> str:
    """The uv `make lock-export` uses ($UV, exported by mk/kubernetes.mk), so the
    export's formatting matches; else the Makefile's own install, else PATH."""
    for candidate in (
        os.environ.get("UV"),
        str(REPO / ".tools" / "uv" / "bin" / "uv"),
        shutil.which("uv"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("uv is not installed: run `make install`", pytrace=False)


def test_hadolint_reports_nothing() -> None:
    proc = run([tool("hadolint"), str(DOCKERFILE)], check=False)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr
    )


def test_image_services_are_the_makefiles() -> None:
    """make images and make lock-export find the same services as this rule."""
    assert IMAGE_SERVICES == ["gateway", "worker"]
    assert make_expand("$(IMAGE_SERVICES)").split() == IMAGE_SERVICES
    for service in IMAGE_SERVICES:
        packages = EXPORT_PACKAGES.get(service, [f"tandem-{service}"])
        assert make_expand(f"$(call export_packages,{service})").split() == packages


@pytest.mark.parametrize("service", IMAGE_SERVICES)
def test_lock_export_is_current(service: str) -> None:
    """services/<svc>/requirements.lock equals a fresh export of uv.lock. When it
    does not, run `make lock-export`."""
    packages = EXPORT_PACKAGES.get(service, [f"tandem-{service}"])
    args = [arg for package in packages for arg in ("--package", package)]
    fresh = run(
        [uv(), "export", *UV_EXPORT_FLAGS, *args], env={"UV_PYTHON_DOWNLOADS": "never"}
    ).stdout
    committed = (SERVICES / service / "requirements.lock").read_text()
    assert committed == fresh, (
        f"services/{service}/requirements.lock is stale: run `make lock-export`"
    )
    assert "--hash=sha256:" in committed
    # Workspace members are installed from source, not from the export.
    assert not re.search(r"^(-e |\./|tandem-)", committed, re.M)


def test_makefile_exports_the_same_packages() -> None:
    mk = (REPO / "mk" / "kubernetes.mk").read_text()
    for service, packages in EXPORT_PACKAGES.items():
        m = re.search(rf"^{service.upper()}_EXPORT_PACKAGES\s*:?=\s*(.+)$", mk, re.M)
        assert m and m.group(1).split() == packages, service
    m = re.search(r"^UV_EXPORT_FLAGS\s*:?=\s*(.+)$", mk, re.M)
    assert m and m.group(1).split() == UV_EXPORT_FLAGS


def test_one_dockerfile_for_both_services() -> None:
    assert not list(SERVICES.glob("*/Dockerfile")), (
        "services/Dockerfile builds every service (SERVICE=...)"
    )


def test_dockerfile_shape() -> None:
    text = dockerfile()
    header = text[: text.index("\nFROM ")]
    default_base = re.search(r"^ARG BASE_IMAGE=(\S+)$", header, re.M)
    assert default_base and BASE_IMAGE.match(default_base.group(1)), (
        "the default base is the digest-pinned official image"
    )
    check, build, runtime = stages(text)
    # SERVICE is checked first, in a stage of its own, against the build context it mounts;
    # the build waits for its result.
    assert check[0][1] == "${BASE_IMAGE} AS service"
    assert [word for word, _ in check] == ["FROM", "ARG", "RUN"]
    assert check[2][1].startswith("--mount=type=bind,target=/context ")
    assert ("COPY", "--from=service /service /tmp/service") in build
    # The build and runtime stages on the same base: the venv links to its interpreter.
    assert build[0][1] == "${BASE_IMAGE} AS build" and runtime[0][1] == "${BASE_IMAGE} AS runtime"
    build_text = " ".join(args for _, args in build)
    runtime_text = " ".join(args for _, args in runtime)
    # Dependencies from the service's hash-pinned export, binary wheels only (no compiler).
    assert "${SERVICE}/requirements.lock" in build_text
    assert "--require-hashes" in build_text and "--only-binary=:all:" in build_text
    # The proxy CA comes as a build secret on the steps that reach the index, never by COPY or ARG.
    installs = [args for word, args in build if word == "RUN" and "pip install" in args]
    assert installs and all("--mount=type=secret,id=ca-bundle" in args for args in installs)
    assert not re.search(
        r"(COPY|ADD|ARG)\b[^\n]*(\.pem|\.crt|CERT|ca-bundle)", text.replace("id=ca-bundle", "")
    )
    # The runtime stage installs nothing and builds nothing.
    assert not re.search(r"\b(apt-get|apk|gcc|cc|make|build-essential)\b", runtime_text)
    assert "pip install" not in runtime_text
    # Non-root, numeric so runAsNonRoot can verify it.
    assert [args for word, args in runtime if word == "USER"] == ["10001:10001"]
    env = " ".join(args for word, args in runtime if word == "ENV")
    assert (
        "PYTHONDONTWRITEBYTECODE=1" in env
        and "PYTHONUNBUFFERED=1" in env
        and "SERVICE=${SERVICE}" in env
    )
    # `python -m <service>`, exec'd so Python is PID 1 and gets SIGTERM.
    entrypoint = [args for word, args in runtime if word == "ENTRYPOINT"]
    assert entrypoint == ['["/bin/sh", "-c", "exec python -m \\"$SERVICE\\" \\"$@\\"", "python"]']


def test_gateway_image_carries_tracecheck() -> None:
    """The helm test pod runs `python -m tandem_tracecheck` from the gateway image."""
    build = " ".join(args for _, args in stages(dockerfile())[1])
    assert "tandem_tracecheck /src/tandem_tracecheck" in build
    assert 'if [ "$SERVICE" = gateway ]; then set -- "$@" /src/tandem_tracecheck; fi' in build


@pytest.mark.parametrize("service", IMAGE_SERVICES)
def test_dockerfile_copies_exist_in_the_build_context(service: str) -> None:
    """Every COPY source is inside services/ (the build context) and not ignored."""
    lines = (SERVICES / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for word, args in instructions(dockerfile()):
        if word == "COPY" and "--from=" not in args:
            sources = shlex.split(args.replace("${SERVICE}", service))[:-1]
            for src in sources:
                path = SERVICES / src
                assert path.exists(), f"{service}: COPY {src}: not in services/"
                assert not any(Path(src).match(p.removeprefix("**/")) for p in ignored), (
                    f"{src} is .dockerignored"
                )
