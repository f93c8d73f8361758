"""collector.topology=two-tier (docs/scaling.md): agents that route by trace id to a
tail-sampling gateway tier. The shipped configs, their wiring in the chart, and the RBAC of
the k8s resolver; single stays as it was (the other value sets hold that)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.k8s.conftest import CHART, RELEASE, Rendered

AGENT = CHART / "files" / "otelcol-agent.yaml"
GATEWAY_TIER = CHART / "files" / "otelcol-gateway.yaml"
SINGLE = CHART / "files" / "otelcol-config.yaml"
TWO_TIER = "two-tier"


def test_single_is_the_default_and_ships_only_its_file(
    values: dict[str, Any], rendered: dict[str, Rendered]
) -> None:
    assert values["collector"]["topology"] == "single"
    r = rendered["default"]
    assert r.get("ConfigMap", f"{RELEASE}-collector")["data"] == {
        "otelcol-config.yaml": SINGLE.read_text()
    }
    components = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in r.docs}
    assert "collector-gateway" not in components
    assert r.of_kind("Role") == [] and r.of_kind("RoleBinding") == []


def test_configmaps_carry_both_files_byte_for_byte(rendered: dict[str, Rendered]) -> None:
    r = rendered[TWO_TIER]
    assert r.get("ConfigMap", f"{RELEASE}-collector")["data"] == {
        "otelcol-agent.yaml": AGENT.read_text()
    }
    assert r.get("ConfigMap", f"{RELEASE}-collector-gateway")["data"] == {
        "otelcol-gateway.yaml": GATEWAY_TIER.read_text()
    }
    assert r.container("collector")["args"] == ["--config=/etc/otelcol/otelcol-agent.yaml"]
    assert r.container("collector-gateway")["args"] == [
        "--config=/etc/otelcol/otelcol-gateway.yaml"
    ]


def test_memory_limiter_is_first_in_every_pipeline() -> None:
    for path in (AGENT, GATEWAY_TIER):
        pipelines = yaml.safe_load(path.read_text())["service"]["pipelines"]
        for name, pipeline in pipelines.items():
            assert pipeline["processors"][0] == "memory_limiter", (path.name, name)


def test_agents_route_traces_by_trace_id_and_keep_metrics() -> None:
    config = yaml.safe_load(AGENT.read_text())
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["load_balancing"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    lb = config["exporters"]["load_balancing"]
    assert lb["routing_key"] == "traceID"
    # The whole resolver block from the environment: the k8s resolver in the chart, a
    # static one in tests/otelcol.
    assert lb["resolver"] == "${env:OTELCOL_LB_RESOLVER}"


def test_span_metrics_see_every_span_and_only_tempo_sees_the_sample() -> None:
    config = yaml.safe_load(GATEWAY_TIER.read_text())
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces/metrics"] == {
        "receivers": ["otlp"],
        "processors": ["memory_limiter"],
        "exporters": ["span_metrics", "service_graph"],
    }
    assert pipelines["traces/sampled"] == {
        "receivers": ["otlp"],
        "processors": ["memory_limiter", "tail_sampling", "batch"],
        "exporters": ["otlp_grpc/tempo"],
    }
    assert pipelines["metrics"]["receivers"] == ["span_metrics", "service_graph"]
    # The RED contract is the single tier's, unchanged (docs/metrics.md).
    single = yaml.safe_load(SINGLE.read_text())
    assert config["connectors"] == single["connectors"]
    policies = {
        p["name"]: (p["type"], p[p["type"]])
        for p in config["processors"]["tail_sampling"]["policies"]
    }
    assert policies == {
        "errors": ("status_code", {"status_codes": ["ERROR"]}),
        "slow": ("latency", {"threshold_ms": "${env:OTELCOL_TAIL_LATENCY_THRESHOLD_MS:-1000}"}),
        "share-of-the-rest": (
            "probabilistic",
            {"sampling_percentage": "${env:OTELCOL_TAIL_SAMPLING_PERCENTAGE:-10}"},
        ),
    }


def required_env(text: str) -> set[str]:
    """The ${env:VAR} references of a config (comments aside) that have no default."""
    lines = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return {
        name
        for name, default in re.findall(r"\$\{env:([A-Z0-9_]+)(:-[^}]*)?\}", lines)
        if not default
    }


def env_of(r: Rendered, component: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in r.container(component)["env"]}


def test_the_chart_sets_what_each_config_needs_and_leaves_the_listeners(
    values: dict[str, Any], rendered: dict[str, Rendered]
) -> None:
    r = rendered[TWO_TIER]
    agent, tier = env_of(r, "collector"), env_of(r, "collector-gateway")
    assert required_env(AGENT.read_text()) <= set(agent)
    assert required_env(GATEWAY_TIER.read_text()) <= set(tier)
    # Listeners keep their defaults, the chart's ports.
    assert not {n for n in (*agent, *tier) if n.startswith(("OTELCOL_OTLP", "OTELCOL_TELE"))}
    sampling = values["collector"]["gatewayTier"]["sampling"]
    assert tier["OTELCOL_TAIL_DECISION_WAIT"] == sampling["decisionWait"]
    assert tier["OTELCOL_TAIL_NUM_TRACES"] == str(sampling["numTraces"])
    assert tier["OTELCOL_TAIL_LATENCY_THRESHOLD_MS"] == str(sampling["latencyThresholdMs"])
    assert tier["OTELCOL_TAIL_SAMPLING_PERCENTAGE"] == str(sampling["percentage"])
    assert tier["TEMPO_OTLP_ENDPOINT"] == f"{RELEASE}-tempo:4317"
    assert "TEMPO_OTLP_ENDPOINT" not in agent


def test_the_resolver_watches_the_gateway_tiers_headless_service(
    values: dict[str, Any], rendered: dict[str, Rendered]
) -> None:
    r = rendered[TWO_TIER]
    resolver = yaml.safe_load(env_of(r, "collector")["OTELCOL_LB_RESOLVER"])
    port = values["collector"]["gatewayTier"]["ports"]["otlpGrpc"]
    assert resolver == {"k8s": {"service": f"{RELEASE}-collector-gateway.tandem", "ports": [port]}}
    service = r.get("Service", f"{RELEASE}-collector-gateway")
    assert service["spec"]["clusterIP"] == "None"
    pods = r.get("Deployment", f"{RELEASE}-collector-gateway")["spec"]["template"]
    assert service["spec"]["selector"].items() <= pods["metadata"]["labels"].items()
    assert {p["port"] for p in service["spec"]["ports"]} >= {port}


def test_only_the_agents_may_read_endpointslices_and_nothing_else(
    rendered: dict[str, Rendered],
) -> None:
    r = rendered[TWO_TIER]
    (role,) = r.of_kind("Role")
    assert r.of_kind("ClusterRole") == [] and r.of_kind("ClusterRoleBinding") == []
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    (binding,) = r.of_kind("RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-collector", "namespace": "tandem"}
    ]
    # The agents run as that account, with a projected token; no other pod has a token.
    for doc, spec in r.workloads():
        component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        assert spec.get("automountServiceAccountToken") is False, component
        projected = [v for v in spec.get("volumes", []) if "projected" in v]
        if component == "collector":
            assert spec["serviceAccountName"] == f"{RELEASE}-collector"
            (volume,) = projected
            sources = volume["projected"]["sources"]
            assert any("serviceAccountToken" in s for s in sources)
        else:
            assert spec["serviceAccountName"] == RELEASE, component
            assert projected == [], component


def test_the_gateway_tier_has_its_pdb_and_optional_hpa(
    values: dict[str, Any], rendered: dict[str, Rendered]
) -> None:
    name = f"{RELEASE}-collector-gateway"
    r = rendered[TWO_TIER]
    pdb = r.get("PodDisruptionBudget", name)
    assert pdb["spec"]["maxUnavailable"] == 1
    hpa = r.get("HorizontalPodAutoscaler", name)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    # With the HPA, the Deployment leaves replicas to it.
    assert "replicas" not in r.get("Deployment", name)["spec"]
    assert values["collector"]["gatewayTier"]["autoscaling"]["enabled"] is False
