"""docs/add-a-service.md's service as an image and a pod.

In a copy of the repository with the guide applied (tests/guide.py): the guide's lock steps,
then `make images` builds the ledger from the unchanged services/Dockerfile, the copy's chart
renders its Deployment, and the pod runs as the kubelet would run it, exporting to the
collector where the chart points (the suite's stand-in), its spans in its caller's trace.
That the ledger's spans join the gateway's trace, with the gateway calling it, is
tests/test_add_a_service.py's (real processes). A SERVICE that is no service is refused
in one line.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tandem_localstack import Collector
from tandem_tracecheck import TempoClient
from tandem_tracecheck.scenarios import new_traceparent
from tests import guide
from tests.containers.conftest import (
    Pods,
    _make,
    _require_free,
    _secret_bundle,
    mk_value,
    report,
)
from tests.containers.engine import Engine
from tests.k8s.conftest import REPO, helm_template, package_chart, tool
from tests.k8s.test_images import uv

NAME = guide.SERVICE


@pytest.fixture(scope="module")
def guide_copy(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository with the guide applied, its lock and the ledger's export made as the
    guide's section 3 says."""
    copy = tmp_path_factory.mktemp("guide") / "repo"
    guide.apply(copy)
    # --offline: the ledger adds no dependency, so the cache that built .venv has them all.
    subprocess.run([uv(), "lock", "--offline", "--quiet"], cwd=copy, check=True)
    _make(engine, "lock-export", f"UV={uv()}", cwd=copy)
    assert (copy / "services" / NAME / "requirements.lock").is_file()
    return copy


@pytest.fixture(scope="module")
def ledger_image(engine: Engine, guide_copy: Path) -> str:
    """`make images`, in the copy, for the guide's service only; the image's name."""
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "images", f"CONTAINER_ENGINE={engine.name}"],
        cwd=guide_copy,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for service in ("gateway", "worker", NAME):
        assert f"--build-arg SERVICE={service} " in dry_run, f"make images builds no {service}"
    base = mk_value("TEST_BASE_IMAGE")
    _make(engine, "test-base-image")
    bundle, _ = _secret_bundle(Path(mk_value("TEST_BASE_DIR")))
    seconds = _make(
        engine,
        "images",
        f"IMAGE_SERVICES={NAME}",
        f"BASE_IMAGE={base}",
        f"CA_BUNDLE={bundle}",
        cwd=guide_copy,
    )
    version = yaml.safe_load((REPO / "charts/tandem/Chart.yaml").read_text())["appVersion"]
    image = f"tandem-{NAME}:{version}"
    report(f"the guide's {NAME} image ({image}), make images in a copy: {seconds:.0f} s")
    return image


@pytest.fixture(scope="module")
def ledger_workload(guide_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The guide's service's Deployment, as the copy's packaged chart renders it."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {f"HELM_{kind}_HOME": str(home / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}
    package = package_chart(
        tool("helm"), env, tmp_path_factory.mktemp("chart"), guide_copy / "charts" / "tandem"
    )
    text = helm_template(tool("helm"), env, package).stdout
    (deployment,) = [
        doc
        for doc in yaml.safe_load_all(text)
        if doc
        and doc["kind"] == "Deployment"
        and doc["metadata"]["labels"]["app.kubernetes.io/component"] == NAME
    ]
    return dict(deployment)


@pytest.fixture
def ledger_pods(
    engine: Engine, ledger_workload: dict[str, Any], stand_in: Collector
) -> Iterator[Pods]:
    pods = Pods(engine, {NAME: ledger_workload})
    try:
        yield pods
    finally:
        pods.remove_all()


def test_the_image_is_the_dockerfiles_for_the_service(engine: Engine, ledger_image: str) -> None:
    config = engine("image", "inspect", ledger_image, "--format", "{{json .Config}}").stdout
    config_map = yaml.safe_load(config)
    assert f"SERVICE={NAME}" in config_map["Env"]
    assert config_map["User"] == "10001:10001"
    assert config_map["Entrypoint"] == ["/bin/sh", "-c", 'exec python -m "$SERVICE" "$@"', "python"]


def test_the_pod_runs_and_its_spans_join_the_callers_trace(
    engine: Engine,
    ledger_image: str,
    ledger_workload: dict[str, Any],
    ledger_pods: Pods,
    stand_in: Collector,
    guide_copy: Path,
) -> None:
    """The chart's pod of the guide's service, from its image: ready on its port, a request
    with a caller's traceparent answered 201, its spans stored in the caller's trace as the
    guide's tree expects, and a clean stop (preStop, SIGTERM, exit 0)."""
    (container,) = ledger_workload["spec"]["template"]["spec"]["containers"]
    assert container["image"] == ledger_image
    run = ledger_pods.spec(NAME)
    _require_free({f"{NAME} {name}": port for name, port in run.ports.items()})
    ledger_pods.start(run)

    traceparent, trace_id, span_id = new_traceparent()
    response = httpx.post(
        f"http://127.0.0.1:{run.ports['http']}/entries",
        json={"trace_id": trace_id, "tasks": 1},
        headers={"traceparent": traceparent},
        timeout=30,
    )
    assert response.status_code == 201 and response.json() == {"entry": 1}, response.text

    # The guide's tree, from the gateway's call down: the ledger's SERVER span and its own.
    tree = guide.tree_module(guide_copy)
    (call,) = [c for c in tree.work_trace(1).children if c.children[0].service == NAME]
    expected = call.children[0]
    with TempoClient(stand_in.tempo_url) as tempo:
        spans = tempo.wait_for_trace(trace_id, spans=expected.size(), timeout=60)
    match = tree.check_tree(spans, expected, root_parent=span_id, trace_id=trace_id)
    assert match.problems == [], "\n".join(match.problems)
    assert all(span.resource.get("service.name") == NAME for span in spans)

    code = ledger_pods.stop_as_kubelet(run)
    assert code == 0, ledger_pods.logs(run.pod_name)
    report(f"the guide's {NAME} pod: ready, {len(spans)} spans in the caller's trace, exit 0")


@pytest.mark.parametrize(
    ("service", "line"),
    [
        ("nope", "no folder services/nope; the services here: gateway worker"),
        ("tandem_tracecheck", "services/tandem_tracecheck has no requirements.lock"),
        ("Gateway", "not a service's name; the services here: gateway worker"),
    ],
)
def test_a_service_that_is_not_one_is_refused_in_one_line(
    engine: Engine, service: str, line: str
) -> None:
    _make(engine, "test-base-image")
    recipe = f"tandem-one-image: ; $(call build_image,{service},tandem-refused)"
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            f"--eval={recipe}",
            "tandem-one-image",
            f"CONTAINER_ENGINE={engine.name}",
            f"BASE_IMAGE={mk_value('TEST_BASE_IMAGE')}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    expected = f"services/Dockerfile: SERVICE='{service}': {line} (docs/add-a-service.md)"
    lines = (proc.stdout + proc.stderr).splitlines()
    assert expected in lines, proc.stdout[-3000:] + proc.stderr[-3000:]
