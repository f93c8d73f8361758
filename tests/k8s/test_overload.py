"""The chart's side of overload: admission limits as values, probes the limit never sheds, and
the optional HorizontalPodAutoscalers."""

from __future__ import annotations

from typing import Any

import pytest

from tandem_service import HEALTH_PATHS
from tests.k8s.conftest import Rendered, component_name
from tests.k8s.test_consistency import APPS, env_of, settings


@pytest.mark.parametrize("app", APPS)
def test_the_admission_limit_is_a_value_defaulting_to_the_services_own(
    app: str, values: dict[str, Any], rendered: dict[str, Rendered]
) -> None:
    assert values[app]["maxInFlight"] == settings(app).DEFAULT_MAX_IN_FLIGHT
    assert env_of(rendered["default"].container(app))["MAX_IN_FLIGHT"] == str(
        values[app]["maxInFlight"]
    )
    chosen = {"gateway": "40", "worker": "0"}[app]
    # A value other than the default, or the render could not tell it was passed through.
    assert chosen != str(values[app]["maxInFlight"])
    assert env_of(rendered["autoscaling"].container(app))["MAX_IN_FLIGHT"] == chosen


def test_the_worker_admits_twice_the_gateways_tasks(values: dict[str, Any]) -> None:
    """As values.yaml and docs/deploy-kubernetes.md say: two gateways keep one worker busy
    without spurious sheds."""
    assert values["worker"]["maxInFlight"] == 2 * values["gateway"]["maxInFlight"]


@pytest.mark.parametrize("app", APPS)
def test_probes_call_the_paths_the_admission_limit_never_sheds(
    app: str, rendered: dict[str, Rendered]
) -> None:
    for r in rendered.values():
        container = r.container(app)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["path"] in HEALTH_PATHS, (r.name, probe)


@pytest.mark.parametrize("app", APPS)
def test_the_readiness_timeout_is_the_one_the_overload_bench_probes_with(
    app: str, rendered: dict[str, Rendered]
) -> None:
    from benchmarks.overload import PROBE_TIMEOUT_SECONDS

    probe = rendered["default"].container(app)["readinessProbe"]
    assert probe["timeoutSeconds"] == PROBE_TIMEOUT_SECONDS


def test_autoscaling_is_off_by_default(rendered: dict[str, Rendered]) -> None:
    default = rendered["default"]
    assert default.of_kind("HorizontalPodAutoscaler") == []
    for app in APPS:
        assert default.get("Deployment", component_name(app))["spec"]["replicas"] >= 1


@pytest.mark.parametrize(
    ("app", "low", "high", "cpu"), [("gateway", 2, 8, "700m"), ("worker", 3, 10, "1")]
)
def test_an_enabled_autoscaler_owns_its_deployments_replicas(
    app: str, low: int, high: int, cpu: str, rendered: dict[str, Rendered]
) -> None:
    r = rendered["autoscaling"]
    name = component_name(app)
    hpa = r.get("HorizontalPodAutoscaler", name)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (low, high)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "AverageValue", "averageValue": cpu}
    # Helm must not set a count the autoscaler then fights on every upgrade.
    assert "replicas" not in r.get("Deployment", name)["spec"]
