"""`make deploy` stops helm when a pod cannot pull its image (mk/deploy_watch.py).

There is no cluster here: a fake kubectl and a fake helm on PATH stand in. The
fake kubectl lists the pods as pending until the fake helm says it is ready to
be stopped (its SIGTERM handler is installed), then as the test wants them;
every wait is on that marker or on the watcher's exit, never on a clock.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.k8s.conftest import CHART, NAMESPACE, RELEASE, REPO, make_expand

SCRIPT = REPO / "mk" / "deploy_watch.py"
LOCAL_IMAGES = tuple(make_expand("$(LOCAL_IMAGES)").split())
# Only bounds a failure; the watcher exits as soon as it sees the pods.
EXIT_TIMEOUT = 120

FAKE_KUBECTL = """#!/bin/bash
printf '%s\\n' "$*" >> "$FAKE_DIR/kubectl.calls"
case "$1 $2" in
  "config current-context") echo "$FAKE_CONTEXT" ;;
  "get pods") if [ -e "$FAKE_DIR/helm.ready" ]; then cat "$FAKE_DIR/pods.json"; \
              else cat "$FAKE_DIR/pods-before.json"; fi ;;
  "delete pods") ;;
  *) echo "fake kubectl: unexpected $*" >&2; exit 2 ;;
esac
"""

# With FAKE_HELM_EXIT, exits with it at once; else waits to be stopped and records SIGTERM.
FAKE_HELM = f"""#!{sys.executable}
import os, pathlib, signal, sys
fake = pathlib.Path(os.environ["FAKE_DIR"])
(fake / "helm.args").write_text(" ".join(sys.argv[1:]))
if "FAKE_HELM_EXIT" in os.environ:
    (fake / "helm.ready").touch()
    sys.exit(int(os.environ["FAKE_HELM_EXIT"]))
def stopped(signum, frame):
    (fake / "helm.log").write_text("stopped by SIGTERM")
    sys.exit(143)
signal.signal(signal.SIGTERM, stopped)
(fake / "helm.ready").touch()
while True:
    signal.pause()
"""


def pod(
    name: str,
    image: str,
    waiting: str | None = None,
    message: str = "",
    *,
    controlled: bool = True,
    init: bool = False,
) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting, "message": message}} if waiting else {"running": {}}
    owners = [{"kind": "ReplicaSet", "name": "rs", "controller": True}] if controlled else []
    statuses = [{"name": "app", "image": image, "state": state}]
    return {
        "metadata": {"name": name, "ownerReferences": owners},
        "status": {"initContainerStatuses" if init else "containerStatuses": statuses},
    }


def pod_list(*pods: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(pods)})


PENDING = pod_list(pod("tandem-gateway-7f9c-abcde", "tandem-gateway:0.1.0", "ContainerCreating"))
RUNNING = pod_list(pod("tandem-gateway-7f9c-abcde", "tandem-gateway:0.1.0"))


class Fakes:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "fake"
        self.bin = tmp / "bin"
        self.dir.mkdir()
        self.bin.mkdir()
        for name, text in (("kubectl", FAKE_KUBECTL), ("helm", FAKE_HELM)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        self.pods_before(PENDING)
        self.pods(PENDING)

    def pods_before(self, text: str) -> None:
        """What kubectl lists until helm is running."""
        (self.dir / "pods-before.json").write_text(text)

    def pods(self, text: str) -> None:
        """What kubectl lists once helm is running."""
        (self.dir / "pods.json").write_text(text)

    def read(self, name: str) -> str:
        path = self.dir / name
        return path.read_text() if path.exists() else ""

    def deploy(
        self, *, context: str = "kind-kind", helm_exit: int | None = None, kubectl: str = "kubectl"
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_DIR": str(self.dir),
            "FAKE_CONTEXT": context,
        }
        env.pop("FAKE_HELM_EXIT", None)
        if helm_exit is not None:
            env["FAKE_HELM_EXIT"] = str(helm_exit)
        local = [arg for image in LOCAL_IMAGES for arg in ("--local-image", image)]
        return subprocess.run(
            [
                sys.executable, str(SCRIPT), "--namespace", NAMESPACE, "--release", RELEASE,
                *local, "--kubectl", kubectl, "--interval", "0.05",
                "--", "helm", "upgrade", "--install", RELEASE, str(CHART), "--wait",
            ],
            env=env, capture_output=True, text=True, timeout=EXIT_TIMEOUT, check=False,
        )  # fmt: skip


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return Fakes(tmp_path)


def test_a_tandem_image_in_err_image_pull_stops_helm_with_the_load_command(fakes: Fakes) -> None:
    fakes.pods(
        pod_list(
            pod("tandem-collector-5d4-xyz12", "otel/opentelemetry-collector-contrib:0.1"),
            pod("tandem-gateway-7f9c-abcde", "tandem-gateway:0.1.0", "ErrImagePull", "not found"),
        )
    )
    result = fakes.deploy(context="kind-kind")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "make deploy: pod tandem-gateway-7f9c-abcde cannot pull tandem-gateway:0.1.0 "
        "(ErrImagePull): Tandem's images are in no registry; make load-images CLUSTER=kind, "
        "then make deploy again"
    ]
    assert result.stdout == ""
    assert fakes.read("helm.log") == "stopped by SIGTERM"
    assert fakes.read("helm.args") == f"upgrade --install {RELEASE} {CHART} --wait"
    get_pods = f"get pods --namespace {NAMESPACE} --selector app.kubernetes.io/instance={RELEASE}"
    assert get_pods + " --output json" in fakes.read("kubectl.calls").splitlines()


def test_every_stuck_tandem_image_is_named_and_the_cluster_is_read_from_the_context(
    fakes: Fakes,
) -> None:
    fakes.pods(
        pod_list(
            pod("tandem-worker-1-a", "tandem-worker:0.1.0", "ImagePullBackOff", init=True),
            pod("tandem-gateway-1-b", "docker.io/library/tandem-gateway:0.1.0", "ErrImagePull"),
        )
    )
    result = fakes.deploy(context="k3d-dev")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "make deploy: pod tandem-worker-1-a cannot pull docker.io/library/tandem-gateway:0.1.0, "
        "tandem-worker:0.1.0 (ImagePullBackOff): Tandem's images are in no registry; "
        "make load-images CLUSTER=k3d CLUSTER_NAME=dev, then make deploy again"
    ]
    assert fakes.read("helm.log") == "stopped by SIGTERM"


def test_another_image_that_cannot_be_pulled_is_named_with_the_kubelets_message(
    fakes: Fakes,
) -> None:
    fakes.pods(
        pod_list(
            pod(
                "tandem-tempo-6c8-q",
                "grafana/tempo:3.0.3",
                "ImagePullBackOff",
                'Back-off pulling image "grafana/tempo:3.0.3"',
            )
        )
    )
    result = fakes.deploy()
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "make deploy: pod tandem-tempo-6c8-q cannot pull grafana/tempo:3.0.3 (ImagePullBackOff: "
        'Back-off pulling image "grafana/tempo:3.0.3"); check that the cluster reaches that '
        "registry, then make deploy again"
    ]
    assert fakes.read("helm.log") == "stopped by SIGTERM"


@pytest.mark.parametrize("code", [0, 3])
def test_helm_finishing_on_its_own_gives_its_exit_code_and_nothing_else(
    fakes: Fakes, code: int
) -> None:
    fakes.pods(RUNNING)
    result = fakes.deploy(helm_exit=code)
    assert (result.returncode, result.stdout, result.stderr) == (code, "", "")
    assert fakes.read("helm.log") == ""


def test_pods_stuck_since_an_earlier_deploy_are_deleted_so_they_pull_again(fakes: Fakes) -> None:
    fakes.pods_before(
        pod_list(
            pod("tandem-worker-old-1", "tandem-worker:0.1.0", "ImagePullBackOff"),
            pod("tandem-gateway-old-2", "tandem-gateway:0.1.0", "ErrImagePull"),
            pod("bare", "tandem-worker:0.1.0", "ImagePullBackOff", controlled=False),
        )
    )
    fakes.pods(RUNNING)
    result = fakes.deploy(helm_exit=0)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "make deploy: deleting tandem-gateway-old-2, tandem-worker-old-1, stuck pulling an image "
        "since an earlier deploy, so that their replacements pull at once"
    ]
    deletes = [c for c in fakes.read("kubectl.calls").splitlines() if c.startswith("delete")]
    assert deletes == [
        f"delete pods --namespace {NAMESPACE} --wait=false tandem-gateway-old-2 tandem-worker-old-1"
    ]


def test_without_kubectl_helm_runs_alone_after_one_line(fakes: Fakes, tmp_path: Path) -> None:
    absent = tmp_path / "nowhere" / "kubectl"
    result = fakes.deploy(kubectl=str(absent), helm_exit=0)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"make deploy: {absent} not found, so helm waits for pods that cannot pull their image "
        "until its timeout"
    ]
    assert fakes.read("helm.args").startswith("upgrade --install")
    assert fakes.read("kubectl.calls") == ""


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_watch", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("context", "command"),
    [
        ("kind-kind", "make load-images CLUSTER=kind"),
        ("kind-dev", "make load-images CLUSTER=kind CLUSTER_NAME=dev"),
        ("k3d-k3s-default", "make load-images CLUSTER=k3d"),
        ("minikube", "make load-images CLUSTER=minikube"),
        (
            "gke_project_zone_cluster",
            "load them into the cluster (make load-images CLUSTER=kind|minikube|k3d) "
            "or push them to a registry it pulls from",
        ),
        (
            None,
            "load them into the cluster (make load-images CLUSTER=kind|minikube|k3d) "
            "or push them to a registry it pulls from",
        ),
    ],
)
def test_the_load_command_follows_kubectls_context(context: str | None, command: str) -> None:
    assert load_script().load_command(context) == command


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("tandem-gateway:0.1.0", "tandem-gateway"),
        ("docker.io/library/tandem-gateway:0.1.0", "tandem-gateway"),
        ("localhost/tandem-worker:0.1.0", "tandem-worker"),
        ("tandem-worker:0.1.0@sha256:0123", "tandem-worker"),
        ("localhost:5000/tandem-worker:0.1.0", "localhost:5000/tandem-worker"),
        ("grafana/tempo:3.0.3", "grafana/tempo"),
    ],
)
def test_images_are_matched_by_repository(image: str, repository: str) -> None:
    assert load_script().repository(image) == repository


def test_make_deploy_runs_helm_through_the_watcher() -> None:
    """The recipe, as make would run it (-n: nothing runs)."""
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "deploy", "HELM=/fake/helm", "K8S_TOOL_INSTALLS="],
        cwd=REPO, capture_output=True, text=True, timeout=EXIT_TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    recipe = " ".join(proc.stdout.replace("\\\n", " ").split())
    assert (
        f"mk/deploy_watch.py --namespace {NAMESPACE} --release {RELEASE} "
        "--local-image tandem-gateway --local-image tandem-worker --kubectl kubectl "
        f"-- /fake/helm upgrade --install {RELEASE} charts/tandem --namespace {NAMESPACE} "
        "--create-namespace --wait"
    ) in recipe
