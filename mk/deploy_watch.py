#!/usr/bin/env python3
"""`make deploy`: helm upgrade --install --wait, stopped as soon as a pod cannot pull its image.

    python3 mk/deploy_watch.py --namespace NS --release NAME [--local-image REPOSITORY ...]
        [--kubectl KUBECTL] [--interval SECONDS] -- HELM ARG...

helm --wait waits for every pod to be ready, up to its timeout (5 minutes), and
a pod that cannot pull its image never is. Tandem's images are in no registry:
a local cluster (kind, minikube, k3d) has them only once they are loaded into
it. So while helm waits, this lists the release's pods with kubectl; when one
is in ErrImagePull, ImagePullBackOff or ErrImageNeverPull, it stops helm and
prints one line naming the image and what to run. Without kubectl, helm runs
alone.

Pods that were already stuck pulling before this run are deleted first (those
a controller replaces): their kubelet may wait minutes before it retries the
pull, even once the image is loaded, and helm would wait with it.

Standard library only: make runs it with the python3 it runs everything else with.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"})
# The context name each local cluster tool gives its kubeconfig entry, and the
# tool's own name for its default cluster (then CLUSTER_NAME is not needed).
CONTEXT_PREFIXES = {"kind-": ("kind", "kind"), "k3d-": ("k3d", "k3s-default")}
MINIKUBE_CONTEXT = "minikube"
# How long helm gets to mark the release failed after SIGTERM before SIGKILL.
HELM_STOP_SECONDS = 30.0
KUBECTL_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class StuckPod:
    pod: str
    image: str
    reason: str
    message: str
    replaced_by_controller: bool


def repository(image: str) -> str:
    """`tandem-gateway` for tandem-gateway:0.1.0, docker.io/library/tandem-gateway@sha256:…,
    localhost/tandem-gateway:0.1.0: the name the local images are known by."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    for prefix in ("docker.io/library/", "docker.io/", "localhost/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def stuck_pods(pod_list: dict[str, Any]) -> list[StuckPod]:
    """Pods, not being deleted, with a container (or init container) waiting on a failed pull."""
    stuck = []
    for pod in pod_list.get("items", []):
        metadata = pod.get("metadata", {})
        if metadata.get("deletionTimestamp"):
            continue
        status = pod.get("status", {})
        for container in status.get("initContainerStatuses", []) + status.get(
            "containerStatuses", []
        ):
            waiting = container.get("state", {}).get("waiting") or {}
            if waiting.get("reason") in PULL_FAILURES:
                stuck.append(
                    StuckPod(
                        pod=metadata.get("name", "?"),
                        image=container.get("image", "?"),
                        reason=waiting["reason"],
                        message=" ".join(str(waiting.get("message", "")).split()),
                        replaced_by_controller=any(
                            owner.get("controller") for owner in metadata.get("ownerReferences", [])
                        ),
                    )
                )
    return stuck


def load_command(context: str | None) -> str:
    """What loads the images into the cluster kubectl's context names, if it is a local one."""
    if context == MINIKUBE_CONTEXT:
        return "make load-images CLUSTER=minikube"
    for prefix, (tool, default_cluster) in CONTEXT_PREFIXES.items():
        if context and context.startswith(prefix):
            cluster = context[len(prefix) :]
            name = "" if cluster == default_cluster else f" CLUSTER_NAME={cluster}"
            return f"make load-images CLUSTER={tool}{name}"
    return (
        "load them into the cluster (make load-images CLUSTER=kind|minikube|k3d) "
        "or push them to a registry it pulls from"
    )


def hint(stuck: Sequence[StuckPod], local_images: set[str], context: str | None) -> str:
    """One line: which image, which pod, and what to do about it."""
    local = [s for s in stuck if repository(s.image) in local_images]
    if local:
        images = sorted({s.image for s in local})
        return (
            f"make deploy: pod {local[0].pod} cannot pull {', '.join(images)} ({local[0].reason}): "
            f"Tandem's images are in no registry; {load_command(context)}, then make deploy again"
        )
    first = stuck[0]
    detail = f"{first.reason}: {first.message}" if first.message else first.reason
    return (
        f"make deploy: pod {first.pod} cannot pull {first.image} ({detail}); "
        "check that the cluster reaches that registry, then make deploy again"
    )


class Kubectl:
    def __init__(self, path: str, namespace: str, release: str) -> None:
        self.path, self.namespace, self.release = path, namespace, release

    def _run(self, *args: str) -> str | None:
        """stdout, or None on a failure: helm, which talks to the same cluster, reports those."""
        try:
            proc = subprocess.run(
                [self.path, *args],
                capture_output=True,
                text=True,
                timeout=KUBECTL_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        return proc.stdout if proc.returncode == 0 else None

    def pods(self) -> dict[str, Any]:
        out = self._run(
            "get", "pods", "--namespace", self.namespace,
            "--selector", f"app.kubernetes.io/instance={self.release}", "--output", "json",
        )  # fmt: skip
        try:
            return json.loads(out) if out else {}
        except json.JSONDecodeError:
            return {}

    def delete(self, pods: Sequence[str]) -> None:
        self._run("delete", "pods", "--namespace", self.namespace, "--wait=false", *pods)

    def context(self) -> str | None:
        out = self._run("config", "current-context")
        return out.strip() if out else None


def stop(helm: subprocess.Popen[bytes]) -> None:
    """SIGTERM: helm cancels its wait and marks the release failed, so the next upgrade
    starts clean; SIGKILL only if it does not exit."""
    helm.terminate()
    try:
        helm.wait(timeout=HELM_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        helm.kill()
        helm.wait()


def delete_stuck_from_before(kubectl: Kubectl) -> None:
    names = sorted({s.pod for s in stuck_pods(kubectl.pods()) if s.replaced_by_controller})
    if names:
        print(
            f"make deploy: deleting {', '.join(names)}, stuck pulling an image since an earlier "
            "deploy, so that their replacements pull at once",
            file=sys.stderr,
            flush=True,
        )
        kubectl.delete(names)


def watch(
    helm_argv: Sequence[str], kubectl: Kubectl | None, local_images: set[str], interval: float
) -> int:
    if kubectl:
        delete_stuck_from_before(kubectl)
    helm = subprocess.Popen(list(helm_argv))
    try:
        if kubectl is None:
            return helm.wait()
        while True:
            try:
                return helm.wait(timeout=interval)
            except subprocess.TimeoutExpired:
                pass
            stuck = stuck_pods(kubectl.pods())
            if stuck:
                stop(helm)
                print(hint(stuck, local_images, kubectl.context()), file=sys.stderr, flush=True)
                return 1
    except KeyboardInterrupt:
        # Ctrl-C reached helm as well (one process group): let it cancel, as it does alone.
        helm.wait()
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--release", required=True)
    parser.add_argument(
        "--local-image",
        action="append",
        default=[],
        help="repository of an image that is in no registry (repeat)",
    )
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between pod lists")
    parser.add_argument("helm", nargs=argparse.REMAINDER, help="-- then the helm command")
    args = parser.parse_args(argv)
    helm_argv = args.helm[1:] if args.helm[:1] == ["--"] else args.helm
    if not helm_argv:
        parser.error("no helm command after --")
    kubectl = shutil.which(args.kubectl)
    if kubectl is None:
        print(
            f"make deploy: {args.kubectl} not found, so helm waits for pods that cannot pull "
            "their image until its timeout",
            file=sys.stderr,
            flush=True,
        )
    return watch(
        helm_argv,
        Kubectl(kubectl, args.namespace, args.release) if kubectl else None,
        set(args.local_image),
        args.interval,
    )


if __name__ == "__main__":
    sys.exit(main())
