"""`make load-images CLUSTER=kind|minikube|k3d`: the built images into a local cluster.

No cluster tool runs here: fakes of kind, minikube and k3d, and of podman and
docker, record what make asks of them, on a PATH that otherwise lacks all five.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.k8s.conftest import REPO, make_expand
from tests.support import make_own_lines

CLUSTER_TOOLS = ("kind", "minikube", "k3d")
ENGINES = ("podman", "docker")
TAG = "1.2.3"
IMAGES = tuple(make_expand("$(LOCAL_IMAGES)").split())

# Records its arguments; `image inspect` fails for the images in $FAKE_MISSING; `save
# --output FILE IMAGE...` writes the image names into FILE, which stands for the archive.
FAKE_ENGINE = """#!/bin/bash
printf '%s\\n' "$*" >> "$FAKE_DIR/engine.calls"
[ "$1" = --runtime ] && shift 2
case "$1 $2" in
  "image inspect") case " $FAKE_MISSING " in *" $3 "*) exit 1 ;; esac ;;
  "save --quiet") [ "$3" = --output ] || exit 2; archive=$4; shift 4; echo "$*" > "$archive" ;;
  *) echo "fake engine: unexpected $*" >&2; exit 2 ;;
esac
"""
# Records its name and arguments, and what the archive it was given holds.
FAKE_CLUSTER_TOOL = """#!/bin/bash
last=${@: -1}
line="$(basename "$0") $*"
[ -f "$last" ] && line="$line | archive: $(cat "$last")"
printf '%s\\n' "$line" >> "$FAKE_DIR/cluster.calls"
"""


@pytest.fixture(scope="module")
def path_without_the_tools(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH of one folder: links to what this PATH finds, but the engines and cluster tools."""
    folder = tmp_path_factory.mktemp("path")
    for entry in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(entry):
            continue
        for found in os.scandir(entry):
            link = folder / found.name
            if found.name in CLUSTER_TOOLS + ENGINES or os.path.lexists(link):
                continue
            if found.is_file() and os.access(found.path, os.X_OK):
                link.symlink_to(found.path)
    return str(folder)


class Run:
    def __init__(self, tmp: Path, path: str, tools: tuple[str, ...]) -> None:
        self.fake = tmp / "fake"
        self.fake.mkdir()
        fake_bin = tmp / "bin"
        fake_bin.mkdir()
        for name in tools:
            (fake_bin / name).write_text(FAKE_ENGINE if name in ENGINES else FAKE_CLUSTER_TOOL)
            (fake_bin / name).chmod(0o755)
        self.path = f"{fake_bin}{os.pathsep}{path}"

    def make(self, *args: str, missing: str = "") -> subprocess.CompletedProcess[str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("MAKE", "MFLAGS")) and name != "CLUSTER_NAME"
        }
        env.update(PATH=self.path, FAKE_DIR=str(self.fake), FAKE_MISSING=missing)
        return subprocess.run(
            ["make", "--no-print-directory", "load-images", f"IMAGE_TAG={TAG}", *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def calls(self, name: str) -> list[str]:
        path = self.fake / f"{name}.calls"
        return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize(
    ("cluster", "load"),
    [
        ("kind", "kind load image-archive"),
        ("minikube", "minikube image load"),
        ("k3d", "k3d image import"),
    ],
)
def test_with_podman_each_image_goes_through_an_archive_named_as_the_cluster_asks(
    tmp_path: Path, path_without_the_tools: str, cluster: str, load: str
) -> None:
    """The archive names the image docker.io/library/<image> too: the chart's `tandem-gateway:<tag>`
    is that, where podman alone would write only localhost/tandem-gateway:<tag>."""
    run = Run(tmp_path, path_without_the_tools, ("podman", cluster))
    result = run.make(f"CLUSTER={cluster}", "CONTAINER_ENGINE=podman")
    assert result.returncode == 0, make_own_lines(result)
    loads = run.calls("cluster")
    assert len(loads) == len(IMAGES)
    for image, call in zip(IMAGES, loads, strict=True):
        archive = re.escape(f"/{image}.tar")
        named = re.escape(f"{image}:{TAG} docker.io/library/{image}:{TAG}")
        assert re.fullmatch(rf"{re.escape(load)} (\S+){archive} \| archive: {named}", call), call
    saves = [call for call in run.calls("engine") if " save " in call]
    assert [call.split(" --output ")[0] for call in saves] == ["--runtime runc save --quiet"] * 2
    for call in loads:
        assert not Path(call.split(" | ")[0].split()[-1]).exists(), "the archive is left behind"
    assert [line for line in result.stdout.splitlines() if line] == [
        f"podman save {image}:{TAG}, also named docker.io/library/{image}:{TAG}; "
        f"{load} {call.split(' | ')[0].split()[-1]}"
        for image, call in zip(IMAGES, loads, strict=True)
    ]


@pytest.mark.parametrize(
    ("cluster", "load"),
    [
        ("kind", "kind load docker-image --name dev"),
        ("minikube", "minikube image load --profile dev"),
        ("k3d", "k3d image import --cluster dev"),
    ],
)
def test_with_docker_each_tool_reads_the_image_itself(
    tmp_path: Path, path_without_the_tools: str, cluster: str, load: str
) -> None:
    run = Run(tmp_path, path_without_the_tools, ("docker", cluster))
    result = run.make(f"CLUSTER={cluster}", "CLUSTER_NAME=dev", "CONTAINER_ENGINE=docker")
    assert result.returncode == 0, make_own_lines(result)
    assert run.calls("cluster") == [f"{load} {image}:{TAG}" for image in IMAGES]
    assert result.stdout.splitlines() == [f"{load} {image}:{TAG}" for image in IMAGES]


@pytest.mark.parametrize(
    ("cluster", "url"),
    [
        ("kind", "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"),
        ("minikube", "https://minikube.sigs.k8s.io/docs/start/"),
        ("k3d", "https://k3d.io/#installation"),
    ],
)
def test_a_missing_cluster_tool_is_one_line_and_nothing_runs(
    tmp_path: Path, path_without_the_tools: str, cluster: str, url: str
) -> None:
    run = Run(tmp_path, path_without_the_tools, ("podman",))
    result = run.make(f"CLUSTER={cluster}", "CONTAINER_ENGINE=podman")
    assert result.returncode != 0
    assert make_own_lines(result) == [f"make load-images: {cluster} is not installed ({url})"]
    assert run.calls("engine") == []


@pytest.mark.parametrize("given", [[], ["CLUSTER=docker-desktop"]])
def test_without_a_known_cluster_tool_it_says_which_are(
    tmp_path: Path, path_without_the_tools: str, given: list[str]
) -> None:
    run = Run(tmp_path, path_without_the_tools, ("podman", "kind"))
    result = run.make(*given, "CONTAINER_ENGINE=podman")
    assert result.returncode != 0
    got = given[0].split("=")[1] if given else ""
    assert make_own_lines(result) == [
        "make load-images: CLUSTER=kind, CLUSTER=minikube or CLUSTER=k3d, "
        f"the tool that made the cluster (got '{got}')"
    ]
    assert run.calls("cluster") == []


def test_an_image_not_built_is_one_line_before_anything_is_loaded(
    tmp_path: Path, path_without_the_tools: str
) -> None:
    run = Run(tmp_path, path_without_the_tools, ("podman", "kind"))
    result = run.make("CLUSTER=kind", "CONTAINER_ENGINE=podman", missing=f"tandem-worker:{TAG}")
    assert result.returncode != 0
    assert make_own_lines(result) == [
        f"make load-images: no image tandem-worker:{TAG} in podman: make images first"
    ]
    assert run.calls("cluster") == []
