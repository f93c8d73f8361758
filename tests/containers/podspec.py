"""Turn a pod spec rendered by `helm template` into one `podman run` (or `docker run`).

The container runs as the chart says: image, entrypoint and args, the whole
env block, user and group, read-only root, dropped capabilities, no privilege
escalation, the pod's volumes, resource limits and the grace period. Only
what a local engine lacks is substituted, and each substitution is returned
as a sentence, so the suite can print it. A key this module does not know
fails the translation, so a new chart setting is never dropped unnoticed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.containers.engine import Engine

# Pod and container keys that have no local meaning; each is named once in the substitutions.
CLUSTER_ONLY_POD_KEYS = {
    "serviceAccountName": "the service account (no API server here; the chart mounts no token)",
    "automountServiceAccountToken": "the service account token setting (no API server here)",
    "imagePullSecrets": "image pull secrets (no registry here)",
    "nodeSelector": "scheduling (one machine)",
    "affinity": "scheduling (one machine)",
    "tolerations": "scheduling (one machine)",
}
KNOWN_POD_KEYS = {
    *CLUSTER_ONLY_POD_KEYS,
    "containers",
    "volumes",
    "securityContext",
    "terminationGracePeriodSeconds",
    "restartPolicy",
    "enableServiceLinks",
}
KNOWN_CONTAINER_KEYS = {
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "ports",
    "env",
    "resources",
    "securityContext",
    "volumeMounts",
    "startupProbe",
    "livenessProbe",
    "readinessProbe",
    "lifecycle",
}
POD_SECURITY_KEYS = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "seccompProfile"}
CONTAINER_SECURITY_KEYS = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "privileged",
    "capabilities",
    "seccompProfile",
}
# imagePullPolicy as the engine's --pull (the same three meanings).
PULL_POLICIES = {"Always": "always", "IfNotPresent": "missing", "Never": "never"}
# Kubernetes' default when a pod does not set terminationGracePeriodSeconds.
DEFAULT_GRACE_SECONDS = 30


class UnsupportedSpec(AssertionError):
    """The rendered spec uses something this translation does not map."""


@dataclass(frozen=True)
class Probe:
    path: str
    port: int


@dataclass
class PodRun:
    """One pod's (single) container, ready to start with `engine run`."""

    pod_name: str
    container_name: str
    image: str
    run_args: list[str]  # everything between `run` and the end, image and args included
    grace_seconds: int
    pre_stop: list[str] | None
    probes: dict[str, Probe]
    ports: dict[str, int]
    env: dict[str, str]
    substitutions: list[str] = field(default_factory=list)


def _check_keys(kind: str, given: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise UnsupportedSpec(
            f"{kind} has keys the container suite does not translate: {unknown}; teach "
            "tests/containers/podspec.py"
        )


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, defined: Mapping[str, str]) -> str:
    """The kubelet's $(VAR) expansion: a variable defined earlier is substituted,
    an unknown one is left as written, and $$ is a literal $."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return defined.get(match.group(1), match.group(0))

    return _VAR_REF.sub(replace, value)


def _quantity_cpus(text: str) -> str:
    return str(int(text[:-1]) / 1000) if text.endswith("m") else str(float(text))


def _quantity_bytes(text: str) -> int:
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
    }
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def translate(
    workload: Mapping[str, Any],
    engine: Engine,
    *,
    hosts: Mapping[str, str],
    node_name: str,
    env_overrides: Mapping[str, str] | None = None,
    read_only_root: bool = True,
    name_suffix: str = "",
) -> PodRun:
    """Map a rendered Deployment or Pod to run arguments.

    hosts: Service DNS names to the address that serves them here.
    env_overrides: replaces chart env values (each override is listed as a substitution).
    read_only_root=False runs a twin with a writable root, to see what it writes;
    name_suffix tells such a twin's name apart.
    """
    if workload["kind"] == "Deployment":
        template = workload["spec"]["template"]
        pod_spec, labels = template["spec"], template["metadata"]["labels"]
        pod_name = f"{workload['metadata']['name']}-local{name_suffix}"
        namespace = workload["metadata"]["namespace"]
        restart = "Always"
    elif workload["kind"] == "Pod":
        pod_spec, labels = workload["spec"], workload["metadata"]["labels"]
        pod_name = workload["metadata"]["name"] + name_suffix
        namespace = workload["metadata"]["namespace"]
        restart = pod_spec.get("restartPolicy", "Always")
    else:
        raise UnsupportedSpec(f"{workload['kind']} is not a workload")
    _check_keys(f"{pod_name} pod spec", pod_spec, KNOWN_POD_KEYS)
    if pod_spec.get("enableServiceLinks", True) is not False:
        raise UnsupportedSpec(
            f"{pod_name}: service links are on; the suite does not inject the Service env vars "
            "they add"
        )
    containers = pod_spec["containers"]
    if len(containers) != 1:
        raise UnsupportedSpec(
            f"{pod_name}: {len(containers)} containers; the suite runs single-container pods"
        )
    container = containers[0]
    _check_keys(f"{pod_name} container", container, KNOWN_CONTAINER_KEYS)

    notes: list[str] = []
    cluster_only = sorted(
        {CLUSTER_ONLY_POD_KEYS[k] for k in pod_spec if k in CLUSTER_ONLY_POD_KEYS}
    )
    if cluster_only:
        notes.append("not applied locally: " + "; ".join(cluster_only))
    pull = PULL_POLICIES[container.get("imagePullPolicy", "IfNotPresent")]
    args: list[str] = ["--name", pod_name, "--hostname", pod_name, "--pull", pull]

    # Network: one shared loopback stands in for the pod network and the Services.
    args += ["--network", "host"]
    for name, address in sorted(hosts.items()):
        args += ["--add-host", f"{name}:{address}"]
    notes.append(
        "pod network and Service DNS → the host network, with "
        + ", ".join(f"{n}→{a}" for n, a in sorted(hosts.items()))
        + " in /etc/hosts"
    )

    # Restarts: a crash fails the suite instead of being retried.
    args += ["--restart", "no"]
    if restart != "Never":
        notes.append(f"restartPolicy {restart} → no restart, so a crash fails the suite")
    # Kubernetes ignores an image's HEALTHCHECK; so does this run.
    args += ["--no-healthcheck"]
    limits = engine.run_limits()
    if limits:
        args += limits
        notes.append("ulimits set within this machine's hard limits: " + " ".join(limits[1::2]))

    # Security context: the container's keys win over the pod's.
    pod_sc = pod_spec.get("securityContext", {})
    _check_keys(f"{pod_name} pod securityContext", pod_sc, POD_SECURITY_KEYS)
    sc = container.get("securityContext", {})
    _check_keys(f"{pod_name} container securityContext", sc, CONTAINER_SECURITY_KEYS)
    merged = {**pod_sc, **sc}
    user, group = merged.get("runAsUser"), merged.get("runAsGroup")
    if user is None:
        raise UnsupportedSpec(
            f"{pod_name}: no runAsUser; the image's user would apply, which the suite does not "
            "check"
        )
    if merged.get("runAsNonRoot") and user == 0:
        raise UnsupportedSpec(
            f"{pod_name}: runAsNonRoot with runAsUser 0: the kubelet would refuse to start it"
        )
    args += ["--user", f"{user}:{group}" if group is not None else str(user)]
    if "fsGroup" in pod_sc:
        args += ["--group-add", str(pod_sc["fsGroup"])]
    if merged.get("readOnlyRootFilesystem"):
        if read_only_root:
            args += engine.read_only_flags()
        else:
            notes.append(
                "readOnlyRootFilesystem → a writable root for this twin, to list what it writes"
            )
    if merged.get("privileged"):
        args += ["--privileged"]
    if merged.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    caps = merged.get("capabilities", {})
    args += [f"--cap-drop={c}" for c in caps.get("drop", [])] + [
        f"--cap-add={c}" for c in caps.get("add", [])
    ]
    seccomp = merged.get("seccompProfile", {}).get("type")
    if seccomp not in (None, "RuntimeDefault"):
        raise UnsupportedSpec(f"{pod_name}: seccompProfile {seccomp}")
    if seccomp:
        notes.append("seccompProfile RuntimeDefault → the engine's default seccomp profile")

    # Volumes: only emptyDir, as tmpfs of the same size limit.
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if set(volume) != {"name", "emptyDir"} or set(volume["emptyDir"]) - {"sizeLimit"}:
            raise UnsupportedSpec(f"{pod_name}: volume {volume} is not a plain emptyDir")
        size = volume["emptyDir"].get("sizeLimit")
        options = "rw,nosuid,nodev,mode=1777" + (f",size={_quantity_bytes(size)}" if size else "")
        args += ["--tmpfs", f"{mount['mountPath']}:{options}"]
        notes.append(
            f"emptyDir {mount['name']} at {mount['mountPath']} → tmpfs"
            + (f" of {size}" if size else "")
        )

    # Resources: limits apply; requests only matter to a scheduler.
    resources = container.get("resources", {})
    cpu, memory = resources.get("limits", {}).get("cpu"), resources.get("limits", {}).get("memory")
    if cpu:
        args += ["--cpus", _quantity_cpus(str(cpu))]
    if memory:
        args += ["--memory", str(_quantity_bytes(str(memory)))]
    if resources.get("requests"):
        notes.append("resource requests not applied (they only steer a scheduler)")

    grace = int(pod_spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))
    args += ["--stop-timeout", str(grace)]

    # Env: literal values, with the downward API fields given literally and
    # $(VAR) expanded as the kubelet does (an engine does neither).
    fields = {
        "metadata.name": pod_name,
        "metadata.namespace": namespace,
        "spec.nodeName": node_name,
        **{f"metadata.labels['{k}']": v for k, v in labels.items()},
    }
    env: dict[str, str] = {}
    downward = []
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
        elif "fieldRef" in item.get("valueFrom", {}):
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            if path not in fields:
                raise UnsupportedSpec(f"{pod_name}: downward API field {path}")
            env[item["name"]] = fields[path]
            downward.append(f"{item['name']}={fields[path]}")
        else:
            raise UnsupportedSpec(
                f"{pod_name}: env {item['name']} comes from {item.get('valueFrom')}"
            )
    if downward:
        notes.append(f"downward API env → literal values in {pod_name}: " + ", ".join(downward))
    if any(_VAR_REF.search(str(item.get("value", ""))) for item in container.get("env", [])):
        notes.append("$(VAR) references in env expanded as the kubelet does")
    for name, value in (env_overrides or {}).items():
        notes.append(f"env {name} in {pod_name}: {env.get(name)!r} → {value!r}")
        env[name] = value
    for name, value in env.items():
        args += ["--env", f"{name}={value}"]

    ports = {
        p.get("name", str(p["containerPort"])): int(p["containerPort"])
        for p in container.get("ports", [])
    }
    probes = {}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if kind in container:
            get = container[kind]["httpGet"]
            port = ports[get["port"]] if isinstance(get["port"], str) else int(get["port"])
            probes[kind] = Probe(get["path"], port)
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if pre_stop:
        notes.append(
            "preStop exec runs through `exec` before the engine's stop, as the kubelet orders them"
        )

    # command replaces the image's ENTRYPOINT, args its CMD; both see $(VAR) expansion.
    command = [expand(str(c), env) for c in container.get("command", [])]
    tail = [expand(str(a), env) for a in container.get("args", [])]
    if command:
        args += ["--entrypoint", command[0] if not engine.is_podman else json.dumps(command)]
        tail = (command[1:] if not engine.is_podman else []) + tail
    image = container["image"]
    return PodRun(
        pod_name=pod_name,
        container_name=container["name"],
        image=image,
        run_args=[*args, image, *tail],
        grace_seconds=grace,
        pre_stop=pre_stop,
        probes=probes,
        ports=ports,
        env=env,
        substitutions=notes,
    )
