"""Bad values fail `helm template` (and so `helm install`) with a message naming the field.

Helm 3 reports a schema error as `gateway.replicaCount: Invalid type...`,
Helm 4 as `at '/gateway/replicaCount': got string, want integer`; both are
accepted. Cross-field rules are template `fail`s with their own sentence.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tandem_telemetry.propagation import DEFAULT_PROPAGATORS
from tests.k8s.conftest import CHART, helm_template, tool

# (case, helm --set/--set-string args, the field the error must name)
SCHEMA_CASES = [
    ("wrong type", ["--set-string", "gateway.replicaCount=two"], "gateway.replicaCount"),
    ("zero replicas", ["--set", "worker.replicaCount=0"], "worker.replicaCount"),
    ("unknown key (typo)", ["--set", "gateway.replicas=3"], "replicas"),
    ("unknown top-level key", ["--set", "colector.enabled=false"], "colector"),
    ("latest tag", ["--set", "collector.image.tag=latest"], "collector.image.tag"),
    ("port out of range", ["--set", "gateway.port=70000"], "gateway.port"),
    ("internal port out of range", ["--set", "gateway.internalPort=0"], "gateway.internalPort"),
    ("bad retention", ["--set", "tempo.retention=forever"], "tempo.retention"),
    ("missing limits", ["--set", "gateway.resources.limits=null"], "gateway.resources"),
    ("bad role", ["--set", "grafana.anonymousRole=Root"], "grafana.anonymousRole"),
    ("bad sampler", ["--set", "telemetry.tracesSampler=sometimes"], "telemetry.tracesSampler"),
    # Only the propagators the images ship: jaeger and xray are not installed there, and a
    # service told to use one would not start (a crash-looping pod).
    (
        "propagator the images lack",
        ["--set", "telemetry.propagators={tracecontext,baggage,jaeger}"],
        "telemetry.propagators",
    ),
    (
        "propagators as one string",
        ["--set", "telemetry.propagators=b3multi"],
        "telemetry.propagators",
    ),
    (
        "none beside a propagator",
        ["--set", "telemetry.propagators={none,b3}"],
        "telemetry.propagators",
    ),
    ("no propagator at all", ["--set", "telemetry.propagators={}"], "telemetry.propagators"),
    ("bad log level", ["--set", "worker.logLevel=LOUD"], "worker.logLevel"),
    ("bad env name", ["--set", "gateway.env.9LIVES=x"], "gateway.env"),
    (
        "bad endpoint",
        ["--set", "collector.externalEndpoint=otel:4317"],
        "collector.externalEndpoint",
    ),
    (
        "comma in an attribute",
        ["--set-string", "telemetry.resourceAttributes.team=a\\,b"],
        "telemetry.resourceAttributes",
    ),
    (
        "metric interval too short",
        ["--set", "telemetry.metricExportIntervalMillis=10"],
        "telemetry.metricExportIntervalMillis",
    ),
    ("negative admission limit", ["--set", "worker.maxInFlight=-1"], "worker.maxInFlight"),
    (
        "bad autoscaling CPU",
        ["--set", "gateway.autoscaling.averageCPU=lots"],
        "gateway.autoscaling.averageCPU",
    ),
    (
        "bad access mode",
        ["--set", "tempo.persistence.accessModes[0]=RWO"],
        "tempo.persistence.accessModes",
    ),
]

# A service of your own (docs/add-a-service.md), to which the cases below add one mistake.
LEDGER = [
    "--set",
    "extraServices.ledger.image.repository=tandem-ledger",
    "--set",
    "extraServices.ledger.port=8083",
]
SCHEMA_CASES += [
    (
        "a service named as a component",
        [
            "--set",
            "extraServices.worker.image.repository=x",
            "--set",
            "extraServices.worker.port=1",
        ],
        "worker",
    ),
    (
        "a service name Kubernetes refuses",
        [
            "--set",
            "extraServices.Led_ger.image.repository=x",
            "--set",
            "extraServices.Led_ger.port=1",
        ],
        "Led_ger",
    ),
    ("a service without a port", ["--set", "extraServices.ledger.image.repository=x"], "port"),
    ("a key the worker has not", [*LEDGER, "--set", "extraServices.ledger.replicas=3"], "replicas"),
    (
        "a service port out of range",
        [*LEDGER, "--set", "extraServices.ledger.port=0"],
        "extraServices.ledger.port",
    ),
]

# Rules spanning fields: the template names what is missing and why.
FAIL_CASES = [
    (
        "external collector without endpoint",
        ["--set", "collector.enabled=false"],
        "collector.externalEndpoint is required",
    ),
    (
        "no tempo, no traces endpoint",
        ["--set", "tempo.enabled=false"],
        "collector.tracesEndpoint is required",
    ),
    (
        "grafana without tempo",
        [
            "--set",
            "tempo.enabled=false",
            "--set",
            "collector.tracesEndpoint=t:4317",
            "--set",
            "grafana.enabled=true",
            "--set",
            "tracecheck.enabled=false",
        ],
        "grafana.tempoUrl is required",
    ),
    (
        "gateway listeners on one port",
        ["--set", "gateway.internalPort=8080"],
        "gateway.internalPort must differ from gateway.port",
    ),
    (
        "autoscaling bounds reversed",
        [
            "--set",
            "worker.autoscaling.enabled=true",
            "--set",
            "worker.autoscaling.minReplicas=5",
            "--set",
            "worker.autoscaling.maxReplicas=3",
        ],
        "worker.autoscaling.maxReplicas must be at least its minReplicas",
    ),
    (
        "propagators through the env",
        ["--set", "worker.env.OTEL_PROPAGATORS=tracecontext"],
        "set telemetry.propagators, not worker.env.OTEL_PROPAGATORS",
    ),
    (
        "a caller that is no component",
        [*LEDGER, "--set", "extraServices.ledger.callers={tempo}"],
        "extraServices.ledger.callers: tempo is neither gateway, worker nor one of extraServices",
    ),
    (
        "a service calling itself",
        [*LEDGER, "--set", "extraServices.ledger.callers={ledger}"],
        "extraServices.ledger.callers names ledger itself",
    ),
    (
        "a service's propagators through the env",
        [*LEDGER, "--set", "extraServices.ledger.env.OTEL_PROPAGATORS=b3"],
        "set telemetry.propagators, not extraServices.ledger.env.OTEL_PROPAGATORS",
    ),
    (
        "a service's autoscaling bounds reversed",
        [
            *LEDGER,
            "--set",
            "extraServices.ledger.autoscaling.enabled=true",
            "--set",
            "extraServices.ledger.autoscaling.minReplicas=5",
            "--set",
            "extraServices.ledger.autoscaling.maxReplicas=3",
            "--set",
            "extraServices.ledger.autoscaling.averageCPU=600m",
        ],
        "extraServices.ledger.autoscaling.maxReplicas must be at least its minReplicas",
    ),
    (
        "helm test without tempo",
        ["--set", "tempo.enabled=false", "--set", "collector.tracesEndpoint=t:4317"],
        "tracecheck.tempoUrl is required",
    ),
]


def names_field(message: str, field: str) -> bool:
    return field in message or "/" + field.replace(".", "/") in message


@pytest.mark.parametrize("helm_name", ["helm", "helm3"])
@pytest.mark.parametrize(("case", "args", "field"), SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES])
def test_schema_rejects(
    helm_name: str,
    case: str,
    args: list[str],
    field: str,
    helm_env: dict[str, str],
    chart_package: Path,
) -> None:
    proc = helm_template(tool(helm_name), helm_env, chart_package, *args, check=False)
    assert proc.returncode != 0, f"{case}: accepted"
    assert names_field(proc.stderr, field), f"{case}: error does not name {field}:\n{proc.stderr}"


@pytest.mark.parametrize("helm_name", ["helm", "helm3"])
@pytest.mark.parametrize(("case", "args", "message"), FAIL_CASES, ids=[c[0] for c in FAIL_CASES])
def test_cross_field_rules(
    helm_name: str,
    case: str,
    args: list[str],
    message: str,
    helm_env: dict[str, str],
    chart_package: Path,
) -> None:
    proc = helm_template(tool(helm_name), helm_env, chart_package, *args, check=False)
    assert proc.returncode != 0, f"{case}: accepted"
    assert message in proc.stderr, proc.stderr


# telemetry.propagators as helm is told it -> OTEL_PROPAGATORS in both services' pods.
PROPAGATOR_CASES = [
    ([], DEFAULT_PROPAGATORS),
    (
        ["--set", "telemetry.propagators={tracecontext,baggage,b3multi}"],
        "tracecontext,baggage,b3multi",
    ),
    (["--set", "telemetry.propagators={b3,tracecontext}"], "b3,tracecontext"),
    (["--set", "telemetry.propagators={none}"], "none"),
]


@pytest.mark.parametrize("helm_name", ["helm", "helm3"])
@pytest.mark.parametrize(
    ("args", "expected"), PROPAGATOR_CASES, ids=[c[1] for c in PROPAGATOR_CASES]
)
def test_propagators_the_images_ship_are_accepted(
    helm_name: str,
    args: list[str],
    expected: str,
    helm_env: dict[str, str],
    chart_package: Path,
) -> None:
    """telemetry.propagators is accepted with any of the names the images ship, and becomes
    OTEL_PROPAGATORS, in its order, for the gateway and the worker alike; the default is the
    services' own."""
    text = helm_template(tool(helm_name), helm_env, chart_package, *args).stdout
    found = {}
    for doc in filter(None, yaml.safe_load_all(text)):
        component = doc["metadata"]["labels"].get("app.kubernetes.io/component")
        if doc["kind"] == "Deployment" and component in ("gateway", "worker"):
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            env = [e for e in container["env"] if e["name"] == "OTEL_PROPAGATORS"]
            found[component] = [e["value"] for e in env]
    assert found == {"gateway": [expected], "worker": [expected]}


def test_schema_is_closed_at_every_level() -> None:
    """additionalProperties: false on every object the chart itself defines
    (Kubernetes objects passed through, like affinity, stay open)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_on_purpose = {
        "podSecurityContext",
        "containerSecurityContext",
        "affinity",
        "peers",
        "stringMap",
        "envMap",
        "nodeSelector",
        "tolerations",
        "resourceAttributes",
        "items",
    }

    def walk(node: object, name: str) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and name not in open_on_purpose
            ):
                assert node.get("additionalProperties") is False, f"{name} is open"
            for key, child in node.items():
                walk(child, key if key not in ("properties", "definitions") else name)

    walk(schema, "values")
