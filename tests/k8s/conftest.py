"""Fixtures for the Kubernetes tests: the real tools, and the chart rendered once per value set.

The tools are the pinned ones `make k8s-tools` installs into .tools. Each is
found through the environment variable of its name when that is set (HELM,
HELM3, HADOLINT, CHECKOV, KUBERNETES_VALIDATE, K8S_TOOLS_PYTHON;
mk/kubernetes.mk exports them), else where `make k8s-tools` puts it, else on
PATH. A missing tool fails the test that needs it, loudly, never skips it:
these tests are the only place the chart and the images are checked.

What is rendered is the chart as users get it: `helm package charts/tandem`
into a folder of its own, and every helm command run from there on the
.tgz, so a file the package lacks, or a path into the repository, fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.guide import Guide

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tandem"
VALUES_DIR = Path(__file__).resolve().parent / "values"
DATA_DIR = Path(__file__).resolve().parent / "data"

# The value set of docs/add-a-service.md's values.
ADD_A_SERVICE = "add-a-service"

# The release the value sets are rendered as; skaffold.yaml deploys the same.
RELEASE = "tandem"
NAMESPACE = "tandem"

TOOLS = {
    "helm": "HELM",
    "helm3": "HELM3",
    "hadolint": "HADOLINT",
    "checkov": "CHECKOV",
    "kubernetes-validate": "KUBERNETES_VALIDATE",
    "k8s-tools-python": "K8S_TOOLS_PYTHON",
}
# Where `make k8s-tools` installs a tool, when not in .tools/bin under its own name.
# The Python with jsonschema is the kubernetes-validate venv's own bin/python,
# reached through a link to the venv's folder: started through a link to the
# interpreter itself, Debian's python3 does not find the venv and its packages.
INSTALLED_AT = {"k8s-tools-python": Path(".tools") / "venvs" / "k8s-tools" / "bin" / "python"}


def tool(name: str) -> str:
    """Path of a pinned tool, or a test failure that says how to get it."""
    env = TOOLS[name]
    given = os.environ.get(env)
    if given:
        if not os.access(given, os.X_OK):
            pytest.fail(f"${env}={given} is not an executable; run `make k8s-tools`", pytrace=False)
        return given
    installed = REPO / INSTALLED_AT.get(name, Path(".tools") / "bin" / name)
    candidates = [str(installed), shutil.which(name)]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"{name} is not installed: run `make k8s-tools` (installs it into .tools/bin) "
        f"or point ${env} at it. Looked at: {[c for c in candidates if c]}",
        pytrace=False,
    )


def run(
    cmd: Sequence[str], *, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a tool; on an unexpected failure, fail with its whole output."""
    env = {**os.environ, **kwargs.pop("env", {})}
    cwd = kwargs.pop("cwd", REPO)
    proc = subprocess.run(
        list(cmd), check=False, capture_output=True, text=True, env=env, cwd=cwd, **kwargs
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"`{' '.join(map(str, cmd))}` exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}",
            pytrace=False,
        )
    return proc


def make_expand(expression: str, directory: Path = REPO) -> str:
    """What `expression` expands to in the Makefile of `directory` (with its mk/ files)."""
    recipe = f"tandem-expand: ; @echo '{expression}'"
    proc = run(
        ["make", "--no-print-directory", "-s", f"--eval={recipe}", "tandem-expand"],
        cwd=directory,
    )
    return proc.stdout.strip()


# A kubeconfig whose only cluster refuses connections: no test reaches a real cluster.
NO_CLUSTER = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: none, context: {cluster: none}}]
current-context: none
"""


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Keep helm's config and cache out of $HOME (CI machines are shared), and away from
    whatever cluster the user's kubeconfig names."""
    home = tmp_path_factory.mktemp("helm-home")
    (home / "kubeconfig").write_text(NO_CLUSTER)
    return {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "kubeconfig"),
    }


def package_chart(
    helm: str, env: Mapping[str, str], destination: Path, chart: Path = CHART
) -> Path:
    """`helm package` the chart into `destination`; the .tgz it wrote."""
    run([helm, "package", str(chart), "--destination", str(destination)], env=dict(env))
    packages = sorted(destination.glob("*.tgz"))
    assert len(packages) == 1, f"helm package wrote {packages} into {destination}"
    return packages[0]


@pytest.fixture(scope="session")
def chart_package(helm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """charts/tandem packaged by Helm 4, alone in a folder outside the repository."""
    return package_chart(tool("helm"), helm_env, tmp_path_factory.mktemp("chart-package"))


def helm_template(
    helm: str, env: Mapping[str, str], package: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`helm template` the packaged chart, from the package's folder."""
    return run(
        [helm, "template", RELEASE, f"./{package.name}", "--namespace", NAMESPACE, *args],
        env=dict(env),
        cwd=package.parent,
        check=check,
    )


# --- Value sets ---------------------------------------------------------------


def value_set_args() -> dict[str, list[str]]:
    """helm arguments per value set: the defaults, each tests/k8s/values/*.yaml, the
    service docs/add-a-service.md adds (extraServices, read from the guide), and the
    values skaffold's dev profile sets (so `skaffold dev` renders too)."""
    sets: dict[str, list[str]] = {"default": []}
    for path in sorted(VALUES_DIR.glob("*.yaml")):
        sets[path.stem] = ["--values", str(path)]
    sets[ADD_A_SERVICE] = Guide.read().helm_args()
    sets["skaffold-dev"] = [
        arg for key, value in skaffold_dev_values().items() for arg in ("--set", f"{key}={value}")
    ]
    return sets


def skaffold_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "skaffold.yaml").read_text())


def skaffold_profile(name: str) -> dict[str, Any]:
    return next(p for p in skaffold_config()["profiles"] if p["name"] == name)


def skaffold_dev_values() -> dict[str, Any]:
    """The helm values the dev profile adds (JSON patches onto setValues)."""
    values: dict[str, Any] = {}
    for patch in skaffold_profile("dev")["patches"]:
        if patch["path"] == "/deploy/helm/releases/0/setValues":
            values.update(patch["value"])
    assert values, "skaffold.yaml's dev profile sets no helm values"
    return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in values.items()}


@dataclass
class Rendered:
    """One value set rendered by Helm 4: the text, and the parsed objects."""

    name: str
    args: list[str]
    text: str
    docs: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for doc in self.docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
        have = [(d["kind"], d["metadata"]["name"]) for d in self.docs]
        pytest.fail(f"{self.name}: no {kind} named {name}; have {have}")

    def workloads(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(object, pod spec) for every Deployment and bare Pod."""
        out = []
        for doc in self.docs:
            if doc["kind"] == "Deployment":
                out.append((doc, doc["spec"]["template"]["spec"]))
            elif doc["kind"] == "Pod":
                out.append((doc, doc["spec"]))
        return out

    def container(self, component: str) -> dict[str, Any]:
        for doc, spec in self.workloads():
            if doc["metadata"]["labels"].get("app.kubernetes.io/component") == component:
                return spec["containers"][0]
        pytest.fail(f"{self.name}: no workload for component {component}")


@pytest.fixture(scope="session")
def rendered(helm_env: dict[str, str], chart_package: Path) -> dict[str, Rendered]:
    """Every value set, rendered once from the package with Helm 4."""
    helm = tool("helm")
    result = {}
    for name, args in value_set_args().items():
        text = helm_template(helm, helm_env, chart_package, *args).stdout
        docs = [d for d in yaml.safe_load_all(text) if d]
        result[name] = Rendered(name=name, args=args, text=text, docs=docs)
    return result


@pytest.fixture(scope="session")
def rendered_dir(rendered: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding one file per rendered value set."""
    out_dir = tmp_path_factory.mktemp("rendered-files")
    for name, r in rendered.items():
        (out_dir / f"{name}.yaml").write_text(r.text)
    return out_dir


@pytest.fixture(scope="session")
def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


@pytest.fixture(scope="session")
def chart_meta() -> dict[str, Any]:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def component_name(component: str) -> str:
    """Object name for a component in the test release ("tandem" contains the chart name)."""
    return f"{RELEASE}-{component}"
