"""extraServices: a service of your own is deployed as the worker is, from values alone.

The service is docs/add-a-service.md's (the add-a-service value set, read from the guide);
every other value set renders the gateway and the worker exactly as without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.guide import Guide
from tests.k8s.conftest import (
    ADD_A_SERVICE,
    Rendered,
    component_name,
    helm_template,
    tool,
)


def guide_service() -> tuple[str, dict[str, Any]]:
    ((name, service),) = Guide.read().values()["extraServices"].items()
    return name, service


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def by_identity(r: Rendered) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in r.docs}


def render(helm_env: dict[str, str], package: Path, *args: str) -> Rendered:
    text = helm_template(tool("helm"), helm_env, package, *Guide.read().helm_args(), *args).stdout
    return Rendered("extra", list(args), text, [d for d in yaml.safe_load_all(text) if d])


def test_the_guides_service_gets_what_the_worker_gets(
    rendered: dict[str, Rendered], chart_meta: dict[str, Any]
) -> None:
    name, service = guide_service()
    r = rendered[ADD_A_SERVICE]
    full = component_name(name)
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
        r.get(kind, full)
    assert not r.of_kind("HorizontalPodAutoscaler")

    mine, worker = r.container(name), r.container("worker")
    assert mine["image"] == f"{service['image']['repository']}:{chart_meta['appVersion']}"
    assert mine["ports"] == [{"name": "http", "containerPort": service["port"], "protocol": "TCP"}]
    env, worker_env = env_of(mine), env_of(worker)
    assert env["PORT"] == str(service["port"]) and env["OTEL_SERVICE_NAME"] == name
    # Everything else is the worker's: the same settings, probes, limits and hardening.
    assert set(worker_env) - set(env) == {"GATEWAY_INTERNAL_URL"}
    for key in set(env) - {"PORT", "OTEL_SERVICE_NAME"}:
        assert env[key] == worker_env[key], key
    ignore = {"name", "image", "ports", "env"}
    assert {k: v for k, v in mine.items() if k not in ignore} == {
        k: v for k, v in worker.items() if k not in ignore
    }
    assert r.get("Service", full)["spec"]["ports"] == [
        {"name": "http", "port": service["port"], "targetPort": "http", "protocol": "TCP"}
    ]


def test_only_the_callers_and_the_collector_change(rendered: dict[str, Rendered]) -> None:
    """Beside the service's own objects, the gateway (its caller) gains LEDGER_URL and an
    egress rule, the collector's policy admits the service's OTLP; nothing else differs."""
    name, service = guide_service()
    default, added = by_identity(rendered["default"]), by_identity(rendered[ADD_A_SERVICE])
    full = component_name(name)
    assert set(added) - set(default) == {
        (kind, full) for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy")
    }
    changed = {key for key in default if default[key] != added[key]}
    assert changed == {
        ("Deployment", component_name("gateway")),
        ("NetworkPolicy", component_name("gateway")),
        ("NetworkPolicy", component_name("collector")),
    }
    gateway = env_of(rendered[ADD_A_SERVICE].container("gateway"))
    before = env_of(rendered["default"].container("gateway"))
    assert {k: v for k, v in gateway.items() if k not in before} == {
        f"{name.upper()}_URL": f"http://{full}:{service['port']}"
    }
    assert service["callers"] == ["gateway"]


def test_a_key_set_wins_over_the_workers_even_when_false(
    helm_env: dict[str, str], chart_package: Path
) -> None:
    name, _ = guide_service()
    key = f"extraServices.{name}"
    r = render(
        helm_env,
        chart_package,
        *("--set", "worker.untrustedContext=true", "--set", f"{key}.untrustedContext=false"),
        *("--set", f"{key}.maxInFlight=0", "--set", f"{key}.image.tag=1.2.3"),
        *("--set", f"{key}.serviceName=books", "--set", f"{key}.env.FEATURE=on"),
        *("--set", f"{key}.autoscaling.enabled=true", "--set", f"{key}.autoscaling.minReplicas=2"),
        *("--set", f"{key}.autoscaling.maxReplicas=4", "--set", f"{key}.autoscaling.averageCPU=1"),
    )
    env = env_of(r.container(name))
    assert env["TANDEM_UNTRUSTED_CONTEXT"] == "false"
    assert env_of(r.container("worker"))["TANDEM_UNTRUSTED_CONTEXT"] == "true"
    assert env["MAX_IN_FLIGHT"] == "0" and env["OTEL_SERVICE_NAME"] == "books"
    assert env["FEATURE"] == "on" and "FEATURE" not in env_of(r.container("worker"))
    assert r.container(name)["image"].endswith(":1.2.3")
    deployment = r.get("Deployment", component_name(name))
    assert "replicas" not in deployment["spec"]  # the HorizontalPodAutoscaler owns it
    hpa = r.get("HorizontalPodAutoscaler", component_name(name))
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)


def test_a_service_may_call_another(helm_env: dict[str, str], chart_package: Path) -> None:
    """A caller among extraServices gets the URL and the egress, as the gateway does."""
    name, service = guide_service()
    r = render(
        helm_env,
        chart_package,
        *("--set", "extraServices.audit.image.repository=tandem-audit"),
        *(
            "--set",
            "extraServices.audit.port=8090",
            "--set",
            f"extraServices.audit.callers={{{name}}}",
        ),
    )
    assert env_of(r.container(name))["AUDIT_URL"] == f"http://{component_name('audit')}:8090"
    egress = r.get("NetworkPolicy", component_name(name))["spec"]["egress"]
    assert any(
        rule.get("ports") == [{"protocol": "TCP", "port": 8090}]
        and rule["to"][0]["podSelector"]["matchExpressions"][0]["values"] == ["audit"]
        for rule in egress
    ), egress
    assert "AUDIT_URL" not in env_of(r.container("gateway"))
    assert service["port"] != 8090  # the premise: a port of its own
