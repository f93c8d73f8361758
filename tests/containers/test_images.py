"""The built images: no build secret in any layer, nothing that installs packages, and a DEV_SYNC
variant skaffold can sync into."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.containers.conftest import APPS, Images, report
from tests.containers.engine import Engine
from tests.k8s.conftest import skaffold_profile


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


@pytest.mark.parametrize("app", APPS)
def test_image_holds_no_installer(engine: Engine, images: Images, app: str) -> None:
    """The runtime image runs code and installs none: no pip, in the venv or the base."""
    for python in ("python", "/usr/bin/python3", "/usr/local/bin/python3"):
        proc = engine(
            "run",
            "--rm",
            *engine.run_limits(),
            "--entrypoint",
            "sh",
            images.tags[app],
            "-c",
            f"[ ! -x {python} ] || {python} -m pip --version",
            check=False,
        )
        assert (
            proc.returncode != 0 or not proc.stdout.strip() or "No module named pip" in proc.stderr
        ), (python, proc.stdout)
        assert "pip " not in proc.stdout, f"{python} has pip: {proc.stdout}"
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
