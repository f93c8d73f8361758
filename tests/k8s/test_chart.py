"""charts/tandem, as packaged: lint, Helm 3/4 parity, Kubernetes schema validation, hardening."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.conftest import (
    NAMESPACE,
    RELEASE,
    Rendered,
    helm_template,
    run,
    tool,
    value_set_args,
)

VALUE_SETS = list(value_set_args())
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}


def kube_versions(chart_meta: dict[str, Any]) -> list[str]:
    """The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
    newest kubernetes-validate knows (its default)."""
    oldest = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)(-0)?", chart_meta["kubeVersion"])
    assert oldest, (
        f"Chart.yaml kubeVersion {chart_meta['kubeVersion']!r} is not of the form >=X.Y.Z-0"
    )
    help_text = run([tool("kubernetes-validate"), "--help"]).stdout
    newest = re.search(r"Defaults to (\d+\.\d+\.\d+)", help_text)
    assert newest, "cannot find kubernetes-validate's default Kubernetes version in its --help"
    return [oldest.group(1), newest.group(1)]


@pytest.mark.parametrize("helm_name", ["helm", "helm3"])
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict(
    helm_name: str, value_set: str, helm_env: dict[str, str], chart_package: Path
) -> None:
    helm = tool(helm_name)
    proc = run(
        [
            helm,
            "lint",
            "--strict",
            f"./{chart_package.name}",
            "--namespace",
            NAMESPACE,
            *value_set_args()[value_set],
        ],
        env=helm_env,
        cwd=chart_package.parent,
    )
    assert "0 chart(s) failed" in proc.stdout


def test_helm_versions_are_3_and_4(helm_env: dict[str, str]) -> None:
    """The chart is checked with both major versions it supports."""
    assert run([tool("helm"), "version", "--short"], env=helm_env).stdout.startswith("v4.")
    assert run([tool("helm3"), "version", "--short"], env=helm_env).stdout.startswith("v3.")


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm3_renders_the_same_objects(
    value_set: str, rendered: dict[str, Rendered], helm_env: dict[str, str], chart_package: Path
) -> None:
    """Helm 3 renders what Helm 4 renders (Grafana's random password aside)."""
    args = value_set_args()[value_set]
    text = helm_template(tool("helm3"), helm_env, chart_package, *args).stdout

    def normalise(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for doc in docs:
            if doc["kind"] == "Secret":
                doc["data"] = {k: "<random>" for k in doc.get("data", {})}
        return sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"]))

    helm3_docs = normalise([d for d in yaml.safe_load_all(text) if d])
    helm4_docs = normalise([d for d in yaml.safe_load_all(rendered[value_set].text) if d])
    assert helm3_docs == helm4_docs


def test_kubernetes_validate_strict(rendered_dir, chart_meta: dict[str, Any]) -> None:
    """Every rendered object of every value set is valid Kubernetes, strictly
    (no unknown fields), for the oldest and the newest version."""
    files = sorted(str(p) for p in rendered_dir.glob("*.yaml"))
    for version in kube_versions(chart_meta):
        proc = run(
            [
                tool("kubernetes-validate"),
                "--strict",
                "--quiet",
                "--kubernetes-version",
                version,
                *files,
            ],
            check=False,
        )
        assert proc.returncode == 0, f"kubernetes-validate {version}:\n{proc.stdout}\n{proc.stderr}"


def test_kubernetes_validate_catches_a_typo(tmp_path, chart_meta: dict[str, Any]) -> None:
    """The validator really is strict: a misspelt field fails."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
        "spec: {selector: {a: b}, ports: [{port: 80, targetPrt: 8080}]}\n"
    )
    proc = run([tool("kubernetes-validate"), "--strict", "--quiet", str(bad)], check=False)
    assert proc.returncode != 0


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_is_labelled_and_namespaced(
    value_set: str, rendered: dict[str, Rendered]
) -> None:
    for doc in rendered[value_set].docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        labels = doc["metadata"].get("labels", {})
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
        ):
            assert labels.get(key), f"{where} lacks label {key}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert doc["metadata"].get("namespace") == NAMESPACE, (
            f"{where} is not in the release namespace"
        )
        if doc["kind"] == "Deployment":
            pod_labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
            assert (
                pod_labels.get("app.kubernetes.io/component")
                == labels["app.kubernetes.io/component"]
            )


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_is_hardened(value_set: str, rendered: dict[str, Rendered]) -> None:
    r = rendered[value_set]
    dev = value_set == "skaffold-dev"
    assert r.workloads(), "nothing rendered"
    for doc, spec in r.workloads():
        where = f"{value_set}: {doc['kind']}/{doc['metadata']['name']}"
        assert spec.get("automountServiceAccountToken") is False, where
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert (
            not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        ), where
        for c in spec.get("initContainers", []) + spec["containers"]:
            cwhere = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True, cwhere
            assert sc.get("allowPrivilegeEscalation") is False, cwhere
            assert sc.get("privileged") is False, cwhere
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], cwhere
            assert not sc.get("capabilities", {}).get("add"), cwhere
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", cwhere
            # Only the dev profile writes synced sources into the app images.
            expect_ro = not (dev and c["name"] in ("gateway", "worker", "tracecheck"))
            assert sc.get("readOnlyRootFilesystem") is expect_ro, cwhere
            assert int(sc.get("runAsUser", pod_sc.get("runAsUser", 0))) >= 10000, (
                f"{cwhere}: UID below 10000"
            )
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), (
                    f"{cwhere} lacks {kind}"
                )
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1], f"{cwhere}: untagged image {image}"
            assert not re.search(r":latest(@|$)", image), f"{cwhere}: :latest image {image}"
            if doc["kind"] in LONG_RUNNING_KINDS:
                assert "livenessProbe" in c and "readinessProbe" in c, f"{cwhere} lacks probes"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_third_party_images_are_pinned_by_digest(
    value_set: str, rendered: dict[str, Rendered]
) -> None:
    for _, spec in rendered[value_set].workloads():
        for c in spec["containers"]:
            if not c["image"].startswith("tandem-"):
                assert re.search(r":[\w.-]+@sha256:[0-9a-f]{64}$", c["image"]), c["image"]


def test_pod_disruption_budgets_cover_gateway_and_worker(rendered: dict[str, Rendered]) -> None:
    r = rendered["default"]
    for component in ("gateway", "worker"):
        pdb = r.get("PodDisruptionBudget", f"{RELEASE}-{component}")
        deployment = r.get("Deployment", f"{RELEASE}-{component}")
        assert (
            pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        )


def test_tempo_storage(rendered: dict[str, Rendered]) -> None:
    """emptyDir by default; a PVC, mounted at /var/tempo, with persistence on."""

    def data_volume(r: Rendered) -> dict[str, Any]:
        spec = r.get("Deployment", f"{RELEASE}-tempo")["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["data"] == "/var/tempo"
        return next(v for v in spec["volumes"] if v["name"] == "data")

    assert "emptyDir" in data_volume(rendered["default"])
    assert not rendered["default"].of_kind("PersistentVolumeClaim")
    assert (
        data_volume(rendered["persistence"])["persistentVolumeClaim"]["claimName"]
        == f"{RELEASE}-tempo"
    )
    pvc = rendered["persistence"].get("PersistentVolumeClaim", f"{RELEASE}-tempo")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"


def test_tempo_grace_period_is_a_value_above_a_clean_stop(
    rendered: dict[str, Rendered],
    values: dict[str, Any],
    helm_env: dict[str, str],
    chart_package: Path,
) -> None:
    """A clean stop takes Tempo about 30 s; the grace period bounds 3.0.3's hang on SIGTERM."""

    def grace(r: Rendered) -> int:
        spec = r.get("Deployment", f"{RELEASE}-tempo")["spec"]["template"]["spec"]
        return int(spec["terminationGracePeriodSeconds"])

    default = values["tempo"]["terminationGracePeriodSeconds"]
    assert grace(rendered["default"]) == default == 45
    text = helm_template(
        tool("helm"), helm_env, chart_package, "--set", "tempo.terminationGracePeriodSeconds=90"
    ).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert grace(Rendered("grace-90", [], text, docs)) == 90


def test_disabled_components_render_nothing(rendered: dict[str, Rendered]) -> None:
    def components(r: Rendered) -> set[str]:
        return {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in r.docs}

    assert "collector" not in components(rendered["external-collector"])
    assert "tempo" not in components(rendered["external-tempo"])
    assert "grafana" not in components(rendered["default"])
    assert "grafana" in components(rendered["grafana"])


def test_notes_explain_how_to_find_a_trace(helm_env: dict[str, str], chart_package: Path) -> None:
    """NOTES.txt: a request, its trace id (body and traceresponse header), Tempo's API."""
    helm = tool("helm")
    notes = run(
        [
            helm,
            "install",
            RELEASE,
            f"./{chart_package.name}",
            "--dry-run=client",
            "--namespace",
            NAMESPACE,
            "--set",
            "grafana.enabled=true",
        ],
        env=helm_env,
        cwd=chart_package.parent,
    ).stdout
    for needle in (
        "/api/work?tasks=",
        "trace_id",
        "traceresponse",
        "port-forward svc/tandem-tempo 3200:3200",
        "/api/v2/traces/",
        "port-forward svc/tandem-grafana 3000:3000",
        "helm test tandem",
    ):
        assert needle in notes, f"NOTES.txt lacks {needle!r}"
