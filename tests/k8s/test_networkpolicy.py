"""The rendered NetworkPolicies admit exactly the intended flows, and nothing else.

A small model of NetworkPolicy semantics decides, for every pair of endpoints
and every port the destination listens on, whether a connection is allowed:
the source's egress (if any policy selects it) and the destination's ingress
(likewise) must both admit it. Endpoints are the release's pods (labels from
the rendered workloads), cluster DNS, and a stranger: a pod in another
namespace, standing for "any client".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.guide import Guide
from tests.k8s.conftest import (
    ADD_A_SERVICE,
    NAMESPACE,
    RELEASE,
    REPO,
    Rendered,
    helm_template,
    tool,
)

STRANGER = "stranger"
DNS = "dns"


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...]
    ports: tuple[tuple[str, int], ...]  # (protocol, port) it listens on

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


NAMESPACE_LABELS = {
    NAMESPACE: {"kubernetes.io/metadata.name": NAMESPACE},
    "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
    "elsewhere": {"kubernetes.io/metadata.name": "elsewhere"},
}


def endpoints(r: Rendered, stranger_ports: tuple[tuple[str, int], ...] = ()) -> dict[str, Endpoint]:
    """Endpoints from the rendered workloads: component name -> pod identity and ports."""
    out = {}
    for doc, spec in r.workloads():
        labels = (
            doc["spec"]["template"]["metadata"]["labels"]
            if doc["kind"] == "Deployment"
            else doc["metadata"]["labels"]
        )
        ports = tuple(
            (p.get("protocol", "TCP"), p["containerPort"])
            for c in spec["containers"]
            for p in c.get("ports", [])
        )
        component = labels["app.kubernetes.io/component"]
        out[component] = Endpoint(component, NAMESPACE, tuple(sorted(labels.items())), ports)
    out[DNS] = Endpoint(DNS, "kube-system", (("k8s-app", "kube-dns"),), (("UDP", 53), ("TCP", 53)))
    # The stranger listens on every port the release uses and on HTTP(S), so an
    # egress rule that lets a pod out to "anywhere" shows up as a flow.
    probe = (
        {p for ep in out.values() for p in ep.ports}
        | {("TCP", 80), ("TCP", 443)}
        | set(stranger_ports)
    )
    out[STRANGER] = Endpoint(STRANGER, "elsewhere", (("app", "stranger"),), tuple(sorted(probe)))
    return out


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector; None or {} selects everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, vals = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def peer_matches(peer: dict[str, Any], policy_ns: str, ep: Endpoint) -> bool:
    if "ipBlock" in peer:
        # Only "anything" CIDRs would match a pod we know nothing about.
        return peer["ipBlock"]["cidr"] in ("0.0.0.0/0", "::/0") and ep.name == STRANGER
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], NAMESPACE_LABELS[ep.namespace]):
            return False
    elif ep.namespace != policy_ns:
        return False
    return selects(peer.get("podSelector"), ep.label_map)


def port_matches(rule_ports: list[dict[str, Any]] | None, protocol: str, port: int) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        end = p.get("endPort", p["port"])
        if isinstance(p["port"], int) and p["port"] <= port <= end:
            return True
    return False


def admitted(
    policies: list[dict[str, Any]],
    direction: str,
    subject: Endpoint,
    other: Endpoint,
    proto: str,
    port: int,
) -> bool:
    """Does `subject`'s side admit the connection? direction: "ingress" or "egress"."""
    key = "Ingress" if direction == "ingress" else "Egress"
    applicable = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and selects(p["spec"]["podSelector"], subject.label_map)
        and key in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not applicable:
        return True  # not isolated in this direction
    peers_key = "from" if direction == "ingress" else "to"
    for policy in applicable:
        for rule in policy["spec"].get(direction) or []:
            peers = rule.get(peers_key)
            if peers and not any(
                peer_matches(peer, policy["metadata"]["namespace"], other) for peer in peers
            ):
                continue
            if port_matches(rule.get("ports"), proto, port):
                return True
    return False


def allowed_flows(
    r: Rendered, stranger_ports: tuple[tuple[str, int], ...] = ()
) -> set[tuple[str, str, int]]:
    policies = r.of_kind("NetworkPolicy")
    eps = endpoints(r, stranger_ports)
    flows = set()
    # DNS only answers; the stranger stands for every client, DNS pods included.
    for src in (ep for ep in eps.values() if ep.name != DNS):
        for dst in eps.values():
            for proto, port in dst.ports:
                if admitted(policies, "egress", src, dst, proto, port) and admitted(
                    policies, "ingress", dst, src, proto, port
                ):
                    if src.name == STRANGER and dst.name in (STRANGER, DNS):
                        continue  # traffic between pods the chart does not own
                    flows.add((src.name, dst.name, port))
    return flows


def dns_flows(*components: str) -> set[tuple[str, str, int]]:
    return {(c, DNS, 53) for c in components}


# The gateway's two listeners, with the default values.
GATEWAY_PORT, GATEWAY_INTERNAL_PORT = 8080, 8082

# The flows the release needs, with the default values.
CORE_FLOWS = {
    (STRANGER, "gateway", GATEWAY_PORT),  # clients
    ("tracecheck", "gateway", GATEWAY_PORT),  # helm test
    ("gateway", "worker", 8081),  # /tasks
    ("worker", "gateway", GATEWAY_INTERNAL_PORT),  # /internal/quota, on the internal listener
    ("gateway", "collector", 4317),  # OTLP
    ("worker", "collector", 4317),
    ("collector", "tempo", 4317),  # spans to Tempo
    ("tracecheck", "tempo", 3200),  # helm test: Tempo's query API
    ("tracecheck", "collector", 8889),  # helm test: the collector's metrics
} | dns_flows("gateway", "worker", "collector", "tempo", "tracecheck")


def test_default_flows_are_exactly_the_intended_ones(rendered: dict[str, Rendered]) -> None:
    assert allowed_flows(rendered["default"]) == CORE_FLOWS


def test_the_default_ports_are_the_charts(values: dict[str, Any]) -> None:
    assert (values["gateway"]["port"], values["gateway"]["internalPort"]) == (
        GATEWAY_PORT,
        GATEWAY_INTERNAL_PORT,
    )


def internal_port_flows(r: Rendered) -> set[tuple[str, str, int]]:
    gateway = r.container("gateway")
    (internal,) = [p["containerPort"] for p in gateway["ports"] if p["name"] == "internal"]
    return {f for f in allowed_flows(r) if f[1] == "gateway" and f[2] == internal}


@pytest.mark.parametrize(
    "value_set",
    [
        "default",
        "grafana",
        "restricted-clients",
        "external-collector",
        "external-tempo",
        ADD_A_SERVICE,
    ],
)
def test_only_the_worker_reaches_the_internal_port(
    value_set: str, rendered: dict[str, Rendered]
) -> None:
    """Not the clients, not the test pod, not a stranger: the worker's pods only."""
    flows = internal_port_flows(rendered[value_set])
    assert flows == {("worker", "gateway", GATEWAY_INTERNAL_PORT)}


def test_clients_allowed_everywhere_still_do_not_reach_the_internal_port(
    helm_env: dict[str, str], chart_package: Path
) -> None:
    """clientPeers that admit every pod of every namespace, and every address, widen the
    public port only."""
    everyone = [{"namespaceSelector": {}, "podSelector": {}}, {"ipBlock": {"cidr": "0.0.0.0/0"}}]
    args = ["--set-json", f"gateway.networkPolicy.clientPeers={json.dumps(everyone)}"]
    text = helm_template(tool("helm"), helm_env, chart_package, *args).stdout
    r = Rendered("clients-everywhere", args, text, [d for d in yaml.safe_load_all(text) if d])
    assert internal_port_flows(r) == {("worker", "gateway", GATEWAY_INTERNAL_PORT)}
    assert (STRANGER, "gateway", GATEWAY_PORT) in allowed_flows(r)


# How docs/deploy-kubernetes.md names the endpoints in its flow table.
DOC_ENDPOINTS = {
    "any client": STRANGER,
    "any address": STRANGER,
    "helm test pod": "tracecheck",
    "cluster dns": DNS,
}
# The sentence each flow table follows.
SINGLE_TABLE = "NetworkPolicies cover every pod"
TWO_TIER_TABLE = "NetworkPolicies\nfor two-tier"


def documented_flows(components: set[str], after: str = SINGLE_TABLE) -> set[tuple[str, str, int]]:
    """The flow table of docs/deploy-kubernetes.md, one (from, to, port) per flow: a cell
    may list several endpoints; "(...)" notes and backticks are prose."""
    docs = (REPO / "docs" / "deploy-kubernetes.md").read_text()
    table = docs.split(after, 1)[1].split("\n\n")[1]
    rows = re.findall(r"^\| (.+?) \| (.+?) \| ([0-9]+) \|$", table, re.M)
    assert rows, "docs/deploy-kubernetes.md: no flow table after 'NetworkPolicies cover every pod'"

    def names(cell: str) -> list[str]:
        found = []
        for part in re.sub(r"\([^)]*\)", "", cell).replace("`", "").split(","):
            name = part.strip().lower()
            found += sorted(components) if name == "every pod" else [DOC_ENDPOINTS.get(name, name)]
        return found

    return {
        (src, dst, int(port))
        for sources, destinations, port in rows
        for src in names(sources)
        for dst in names(destinations)
    }


def test_the_documented_flow_table_is_what_the_policies_admit(
    rendered: dict[str, Rendered],
) -> None:
    """With Grafana on, so that its row counts too."""
    r = rendered["grafana"]
    components = {ep for ep in endpoints(r) if ep not in (STRANGER, DNS)}
    assert documented_flows(components) == allowed_flows(r)


# collector.topology=two-tier: the agents (collector) route traces to the gateway tier and
# watch its endpoints on the Kubernetes API; the gateway tier alone reaches Tempo; Prometheus
# scrapes both tiers.
TWO_TIER_FLOWS = (
    CORE_FLOWS - {("collector", "tempo", 4317)}
    | {
        ("collector", "collector-gateway", 4317),
        ("collector", STRANGER, 443),
        ("collector", STRANGER, 6443),
        ("collector-gateway", "tempo", 4317),
        ("prometheus", "collector", 8889),
        ("prometheus", "collector", 8888),
        ("prometheus", "collector-gateway", 8889),
        ("prometheus", "collector-gateway", 8888),
    }
    | dns_flows("collector-gateway", "prometheus")
)


def test_two_tier_flows_are_exactly_the_intended_ones(rendered: dict[str, Rendered]) -> None:
    r = rendered["two-tier"]
    assert allowed_flows(r, stranger_ports=(("TCP", 6443),)) == TWO_TIER_FLOWS


def test_the_documented_two_tier_flow_table_is_what_the_policies_admit(
    rendered: dict[str, Rendered],
) -> None:
    r = rendered["two-tier"]
    components = {ep for ep in endpoints(r) if ep not in (STRANGER, DNS)}
    documented = documented_flows(components, after=TWO_TIER_TABLE)
    assert documented == allowed_flows(r, stranger_ports=(("TCP", 6443),))


def test_two_tier_agents_reach_only_the_given_api_server_peers(
    helm_env: dict[str, str], chart_package: Path
) -> None:
    """apiServerPeers narrows the agents' API egress from any address to those peers."""
    peers = [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    args = [
        "--values",
        str(REPO / "tests" / "k8s" / "values" / "two-tier.yaml"),
        "--set-json",
        f"collector.networkPolicy.apiServerPeers={json.dumps(peers)}",
    ]
    text = helm_template(tool("helm"), helm_env, chart_package, *args).stdout
    r = Rendered("two-tier-api-peers", args, text, [d for d in yaml.safe_load_all(text) if d])
    flows = allowed_flows(r, stranger_ports=(("TCP", 6443),))
    assert flows == TWO_TIER_FLOWS - {("collector", STRANGER, 443), ("collector", STRANGER, 6443)}


# Grafana on brings the release's Prometheus (prometheus.enabled: null): it scrapes the
# collector's exporter and its own telemetry, and Grafana queries it.
PROMETHEUS_FLOWS = {
    ("prometheus", "collector", 8889),
    ("prometheus", "collector", 8888),
    ("grafana", "prometheus", 9090),
} | dns_flows("prometheus")


def test_grafana_reaches_tempo_and_only_configured_clients_reach_grafana(
    rendered: dict[str, Rendered],
) -> None:
    flows = allowed_flows(rendered["grafana"])
    assert flows == CORE_FLOWS | {("grafana", "tempo", 3200)} | dns_flows("grafana") | (
        PROMETHEUS_FLOWS
    )
    # grafana.yaml admits the ingress-nginx namespace; the stranger is not there.
    policy = rendered["grafana"].get("NetworkPolicy", f"{RELEASE}-grafana")
    grafana = endpoints(rendered["grafana"])["grafana"]
    nginx = Endpoint("nginx", "ingress-nginx", (("app", "nginx"),), ())
    NAMESPACE_LABELS["ingress-nginx"] = {"kubernetes.io/metadata.name": "ingress-nginx"}
    try:
        assert admitted([policy], "ingress", grafana, nginx, "TCP", 3000)
    finally:
        del NAMESPACE_LABELS["ingress-nginx"]


def test_restricted_clients_shut_out_strangers(rendered: dict[str, Rendered]) -> None:
    flows = allowed_flows(rendered["restricted-clients"])
    assert flows == CORE_FLOWS - {(STRANGER, "gateway", GATEWAY_PORT)}


def test_external_collector_flows(rendered: dict[str, Rendered]) -> None:
    """Without the release's collector, the services may reach port 4317 anywhere,
    and nothing else changes."""
    flows = allowed_flows(
        rendered["external-collector"], stranger_ports=(("TCP", 4317), ("TCP", 8889))
    )
    expected = {f for f in CORE_FLOWS if "collector" not in f}
    expected |= {
        ("gateway", STRANGER, 4317),
        ("worker", STRANGER, 4317),
        ("tracecheck", STRANGER, 8889),
    }
    # Tempo stays, but only an external collector could feed it (tempo.networkPolicy.otlpPeers).
    assert flows == expected


def test_external_tempo_flows(rendered: dict[str, Rendered]) -> None:
    flows = allowed_flows(rendered["external-tempo"], stranger_ports=(("TCP", 4317), ("TCP", 3200)))
    expected = {f for f in CORE_FLOWS if "tempo" not in f}
    expected |= {
        ("collector", STRANGER, 4317),
        ("grafana", STRANGER, 3200),
        ("tracecheck", STRANGER, 3200),
    }
    expected |= dns_flows("grafana") | PROMETHEUS_FLOWS
    assert flows == expected


def test_a_service_of_your_own_adds_exactly_its_flows(rendered: dict[str, Rendered]) -> None:
    """docs/add-a-service.md's ledger: its callers reach its port, it reaches the collector and
    DNS, and nothing else changes."""
    (name, service), *_ = Guide.read().values()["extraServices"].items()
    flows = allowed_flows(rendered[ADD_A_SERVICE])
    assert flows == CORE_FLOWS | {
        *((caller, name, service["port"]) for caller in service["callers"]),
        (name, "collector", 4317),
    } | dns_flows(name)


@pytest.mark.parametrize(
    "value_set", ["default", "grafana", "external-collector", "external-tempo", ADD_A_SERVICE]
)
def test_every_pod_is_isolated_both_ways(value_set: str, rendered: dict[str, Rendered]) -> None:
    """No pod of the release escapes a policy in either direction."""
    r = rendered[value_set]
    policies = r.of_kind("NetworkPolicy")
    for component, ep in endpoints(r).items():
        if component in (DNS, STRANGER):
            continue
        for direction in ("Ingress", "Egress"):
            assert any(
                selects(p["spec"]["podSelector"], ep.label_map)
                and direction in p["spec"]["policyTypes"]
                for p in policies
            ), f"{value_set}: {component} has no {direction} policy"


def test_model_sanity() -> None:
    """The model denies what no rule admits and honours ports and namespaces."""
    pod = Endpoint("a", NAMESPACE, (("app", "a"),), (("TCP", 80),))
    other = Endpoint("b", "elsewhere", (("app", "b"),), ())
    policy = {
        "metadata": {"namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": 80}]}
            ],
        },
    }
    # A bare podSelector means the policy's own namespace: b lives elsewhere.
    assert not admitted([policy], "ingress", pod, other, "TCP", 80)
    same_ns = Endpoint("b", NAMESPACE, (("app", "b"),), ())
    assert admitted([policy], "ingress", pod, same_ns, "TCP", 80)
    assert not admitted([policy], "ingress", pod, same_ns, "TCP", 81)
    assert not admitted([policy], "ingress", pod, same_ns, "UDP", 80)
    assert admitted([policy], "egress", pod, same_ns, "TCP", 1)  # no Egress policy: open


def test_prometheus_without_grafana_is_queried_by_its_peers_only(
    helm_env: dict[str, str], chart_package: Path
) -> None:
    """prometheus.enabled=true alone: it scrapes the collector; nothing queries it but the
    configured queryPeers, and Grafana is not there to."""
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}}}]
    args = [
        "--set",
        "prometheus.enabled=true",
        "--set-json",
        f"prometheus.networkPolicy.queryPeers={json.dumps(peers)}",
    ]
    text = helm_template(tool("helm"), helm_env, chart_package, *args).stdout
    r = Rendered("prometheus-alone", args, text, [d for d in yaml.safe_load_all(text) if d])
    expected = CORE_FLOWS | PROMETHEUS_FLOWS - {("grafana", "prometheus", 9090)}
    assert allowed_flows(r) == expected | {(STRANGER, "prometheus", 9090)}


def test_prometheus_stays_off_when_told(helm_env: dict[str, str], chart_package: Path) -> None:
    args = ["--set", "grafana.enabled=true", "--set", "prometheus.enabled=false"]
    text = helm_template(tool("helm"), helm_env, chart_package, *args).stdout
    r = Rendered("grafana-alone", args, text, [d for d in yaml.safe_load_all(text) if d])
    assert allowed_flows(r) == CORE_FLOWS | {("grafana", "tempo", 3200)} | dns_flows("grafana")
