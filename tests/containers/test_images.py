"""The built images: no build secret in any layer, nothing that installs packages, and a DEV_SYNC
variant skaffold can sync into."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import pytest

from tests.containers.conftest import APPS, Images, build_one_image, http_status, report
from tests.containers.engine import Engine
from tests.k8s.conftest import CHART, skaffold_profile
from tests.support import free_port


def _members_with(archive: tarfile.TarFile, needle: bytes, where: str) -> list[str]:
    """Files in `archive`, and in the tars nested in it (the layers), that contain `needle`."""
    found = []
    for member in archive:
        if not member.isfile():
            continue
        data = archive.extractfile(member)
        assert data is not None
        content = data.read()
        name = f"{where}{member.name}"
        if needle in content:
            found.append(name)
        if (
            content[257:262] == b"ustar"
            or member.name.endswith((".tar", "/layer.tar"))
            or content[:2] == b"\x1f\x8b"
        ):
            try:
                with tarfile.open(fileobj=io.BytesIO(content)) as layer:
                    found += _members_with(layer, needle, f"{name}!/")
            except tarfile.TarError:
                pass
    return found


@pytest.mark.parametrize("app", APPS)
def test_no_build_secret_in_any_layer(
    engine: Engine, images: Images, app: str, tmp_path: Path
) -> None:
    """The CA bundle given as a build secret (with a marker certificate only it holds) is in no
    layer, no config and no history of the saved image."""
    saved = tmp_path / f"{app}.tar"
    archive_format = ["--format", "docker-archive"] if engine.is_podman else []
    engine("save", *archive_format, "--output", str(saved), images.tags[app])
    with tarfile.open(saved) as archive:
        names = archive.getnames()
        assert any(n.endswith(".json") for n in names), (
            names
        )  # a real image archive, with its config
        leaks = _members_with(archive, images.secret_marker.encode(), "")
    assert leaks == [], f"the build secret's certificate is in {leaks}"
    history = engine("history", "--no-trunc", "--format", "{{.CreatedBy}}", images.tags[app]).stdout
    assert images.secret_marker not in history


def _assert_no_pip(engine: Engine, image: str) -> None:
    """No Python in the image runs pip: the venv's, Debian's, the official image's."""
    for python in ("python", "/usr/bin/python3", "/usr/local/bin/python3"):
        proc = engine(
            "run",
            "--rm",
            *engine.run_limits(),
            "--entrypoint",
            "sh",
            image,
            "-c",
            f"[ ! -x {python} ] || {python} -m pip --version",
            check=False,
        )
        assert (
            proc.returncode != 0 or not proc.stdout.strip() or "No module named pip" in proc.stderr
        ), (python, proc.stdout)
        assert "pip " not in proc.stdout, f"{image}: {python} has pip: {proc.stdout}"


@pytest.mark.parametrize("app", APPS)
def test_image_holds_no_installer(engine: Engine, images: Images, app: str) -> None:
    """The runtime image runs code and installs none: no pip, in the venv or the base."""
    _assert_no_pip(engine, images.tags[app])
    user = engine(
        "image", "inspect", "--format", "{{.Config.User}}", images.tags[app]
    ).stdout.strip()
    assert user == "10001:10001"


def _sync_destinations(app: str) -> list[str]:
    """Where skaffold's dev profile copies .py files in this app's image."""
    artifacts = {"gateway": 0, "worker": 1}
    for patch in skaffold_profile("dev")["patches"]:
        if patch["path"] == f"/build/artifacts/{artifacts[app]}/sync":
            return [rule["dest"] for rule in patch["value"]["manual"]]
    raise AssertionError(f"skaffold's dev profile syncs nothing into {app}")


@pytest.mark.parametrize("app", APPS)
def test_dev_sync_variant_lets_the_user_write_the_synced_packages(
    engine: Engine, images: Images, app: str
) -> None:
    """UID 10001 can write where skaffold syncs in the DEV_SYNC image, not in the production one."""
    major_minor = ".".join(images.python.split(".")[:2])
    destinations = [
        d.replace("/python3.12/", f"/python{major_minor}/") for d in _sync_destinations(app)
    ]
    if major_minor != "3.12":
        report(f"skaffold sync paths: python3.12 → python{major_minor}, the test base's Python")
    probe = "; ".join(f"open('{d}/_sync_probe.py', 'w').close()" for d in destinations)
    for image, writable in ((images.dev_sync[app], True), (images.tags[app], False)):
        proc = engine(
            "run",
            "--rm",
            *engine.run_limits(),
            "--user",
            "10001:10001",
            "--entrypoint",
            "python",
            image,
            "-c",
            probe,
            check=False,
        )
        assert (proc.returncode == 0) is writable, f"{image}: {proc.stderr}"
        if not writable:
            assert "PermissionError" in proc.stderr, proc.stderr


@pytest.mark.parametrize("app", APPS)
def test_image_ships_the_propagators_the_chart_admits(
    engine: Engine, images: Images, app: str
) -> None:
    """The chart's schema admits exactly the OTEL_PROPAGATORS names the image has (and `none`),
    and the service loads them all: a name the schema lets through cannot stop a pod."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    admitted = schema["properties"]["telemetry"]["properties"]["propagators"]["items"]["enum"]
    names = ",".join(name for name in admitted if name != "none")
    proc = engine(
        "run",
        "--rm",
        *engine.run_limits(),
        "--env",
        f"OTEL_PROPAGATORS={names}",
        "--entrypoint",
        "python",
        images.tags[app],
        "-c",
        "from importlib.metadata import entry_points\n"
        "from tandem_telemetry.propagation import configured_propagator\n"
        "configured_propagator()\n"
        "print(*sorted(e.name for e in entry_points(group='opentelemetry_propagator')))",
    )
    assert set(proc.stdout.split()) | {"none"} == set(admitted), proc.stdout


# --- A Debian base with Debian's pip ------------------------------------------------------
# The suite's base with python3-pip from Debian's archive (dpkg's pip, under PEP 668's
# EXTERNALLY-MANAGED): the runtime stage must remove it too. The engine's layer cache keeps
# the derived base and the image built on it, so only the first run pays for them.
DEBIAN_PIP_BASE = "localhost/tandem-test-base:bookworm-debian-pip"
DEBIAN_PIP_CONTAINERFILE = """\
FROM {base}
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends python3-pip \\
    && rm -rf /var/lib/apt/lists/*
"""


def test_a_debian_base_with_debian_pip_builds_an_image_without_pip(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    """BASE_IMAGE with Debian's python3-pip: the worker image builds (the same recipe as
    `make images`), holds no pip (nor does dpkg list one), and the service answers /healthz."""
    (tmp_path / "Containerfile").write_text(DEBIAN_PIP_CONTAINERFILE.format(base=images.base))
    started = time.monotonic()
    engine("build", *engine.build_flags(), "-t", DEBIAN_PIP_BASE, str(tmp_path), timeout=900)
    base_seconds = time.monotonic() - started
    # The premise: this base's pip is Debian's, which pip itself refuses to uninstall.
    premise = engine(
        "run",
        "--rm",
        *engine.run_limits(),
        DEBIAN_PIP_BASE,
        "sh",
        "-c",
        "python3 -m pip --version && ls /usr/lib/python3.*/EXTERNALLY-MANAGED",
    ).stdout
    assert "/usr/lib/python3/dist-packages/pip" in premise, premise

    version = images.tags["worker"].rsplit(":", 1)[1]
    tag = f"{version}-debian-pip"
    seconds = build_one_image(engine, "worker", f"BASE_IMAGE={DEBIAN_PIP_BASE}", f"IMAGE_TAG={tag}")
    image = f"{images.tags['worker'].rsplit(':', 1)[0]}:{tag}"
    report(
        f"worker image on a Debian base with Debian's pip: base {base_seconds:.0f} s, "
        f"image {seconds:.0f} s (cached after the first run)"
    )
    _assert_no_pip(engine, image)
    status = engine(
        "run",
        "--rm",
        *engine.run_limits(),
        "--entrypoint",
        "dpkg-query",
        image,
        "--show",
        "--showformat=${db:Status-Status}",
        "python3-pip",
        check=False,
    )
    assert status.stdout.strip() in ("", "not-installed", "config-files"), status.stdout

    port = free_port()
    name = "tandem-worker-debian-pip"
    engine("rm", "--force", name, check=False)
    engine(
        "run",
        "--detach",
        "--name",
        name,
        *engine.run_limits(),
        "--network",
        "host",
        "--env",
        f"PORT={port}",
        "--env",
        f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{free_port()}",
        image,
    )
    try:
        deadline = time.monotonic() + 60
        while http_status(f"http://127.0.0.1:{port}/healthz") != 200:
            running = engine("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            logs = engine("logs", name, check=False)
            assert running == "true", f"exited:\n{logs.stdout}{logs.stderr}"
            assert time.monotonic() < deadline, f"no /healthz:\n{logs.stdout}{logs.stderr}"
            time.sleep(0.2)
    finally:
        engine("rm", "--force", name, check=False)
