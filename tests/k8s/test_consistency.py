"""One fact, one place: image names, ports, URLs and env var names agree across
skaffold.yaml, the chart, the Makefile, the Dockerfiles and the services.

The services' side is their contract: gateway.settings / worker.settings
expose DEFAULT_PORT and ENV_VARS (the variables each reads itself), and
tandem_telemetry.ENV_VARS maps every variable the telemetry package reads.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.guide import Guide
from tests.k8s.conftest import (
    ADD_A_SERVICE,
    RELEASE,
    REPO,
    Rendered,
    component_name,
    make_expand,
    skaffold_config,
    skaffold_dev_values,
)

APPS = ("gateway", "worker")
# Set by the chart only so OTEL_RESOURCE_ATTRIBUTES can interpolate them.
DOWNWARD_API_HELPERS = {
    "POD_NAME": "metadata.name",
    "POD_NAMESPACE": "metadata.namespace",
    "NODE_NAME": "spec.nodeName",
}


def settings(app: str) -> Any:
    return importlib.import_module(f"{app}.settings")


def telemetry_env_vars() -> set[str]:
    import tandem_telemetry

    return set(tandem_telemetry.ENV_VARS)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def lookup(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"values.yaml has no {dotted}"
        node = node[part]
    return node


# --- Image names ------------------------------------------------------------------


def test_image_names_agree(values: dict[str, Any]) -> None:
    artifacts = {a["image"]: a for a in skaffold_config()["build"]["artifacts"]}
    mk = (REPO / "mk" / "kubernetes.mk").read_text()
    for app in APPS:
        name = values[app]["image"]["repository"]
        assert name in artifacts, f"skaffold builds no {name}"
        assert artifacts[name]["context"] == "services"
        assert artifacts[name]["docker"]["dockerfile"] == "Dockerfile"
        assert artifacts[name]["docker"]["buildArgs"] == {"SERVICE": app}
        assert (REPO / "services" / "Dockerfile").exists()
        assert re.search(rf"^{app.upper()}_IMAGE\s*:=\s*{re.escape(name)}\s*$", mk, re.M), (
            f"mk: {app.upper()}_IMAGE"
        )
    assert make_expand("$(IMAGE_SERVICES)").split() == sorted(APPS), "make images builds both"
    for app in APPS:
        assert make_expand(f"$(call image_of,{app})") == values[app]["image"]["repository"]
        assert values[app]["image"]["tag"] == "", "the tag defaults to appVersion"


def test_skaffold_sets_the_built_images() -> None:
    release = skaffold_config()["deploy"]["helm"]["releases"][0]
    templates = release["setValueTemplates"]
    for artifact in skaffold_config()["build"]["artifacts"]:
        app = artifact["image"].removeprefix("tandem-")
        # A service of your own is under extraServices (docs/add-a-service.md).
        values_key = app if app in APPS else f"extraServices.{app}"
        key = artifact["image"].replace("-", "_").replace("/", "_")
        assert templates[f"{values_key}.image.repository"] == f"{{{{.IMAGE_REPO_{key}}}}}"
        assert (
            templates[f"{values_key}.image.tag"]
            == f"{{{{.IMAGE_TAG_{key}}}}}@{{{{.IMAGE_DIGEST_{key}}}}}"
        )
    assert release["chartPath"] == "charts/tandem"
    assert release["name"] == RELEASE


def test_tags_default_to_app_version(
    rendered: dict[str, Rendered], chart_meta: dict[str, Any]
) -> None:
    r = rendered["default"]
    for app in APPS:
        assert r.container(app)["image"] == f"tandem-{app}:{chart_meta['appVersion']}"
    assert r.container("tracecheck")["image"] == r.container("gateway")["image"]


@pytest.mark.parametrize("app", APPS)
def test_app_version_is_the_services_version(app: str, chart_meta: dict[str, Any]) -> None:
    """service.version on every span is appVersion: it must be what was built."""
    project = tomllib.loads((REPO / "services" / app / "pyproject.toml").read_text())["project"]
    assert chart_meta["appVersion"] == project["version"]


# --- Ports ----------------------------------------------------------------------


@pytest.mark.parametrize("app", APPS)
def test_ports_agree(app: str, values: dict[str, Any], rendered: dict[str, Rendered]) -> None:
    port = values[app]["port"]
    assert port == settings(app).DEFAULT_PORT, f"values {app}.port != {app}.settings.DEFAULT_PORT"
    # The image's HEALTHCHECK takes PORT, else the service's own DEFAULT_PORT: no port is written
    # in it.
    dockerfile = (REPO / "services" / "Dockerfile").read_text()
    assert (
        "os.environ.get('PORT') or "
        "importlib.import_module(os.environ['SERVICE'] + '.settings').DEFAULT_PORT" in dockerfile
    )
    assert not re.search(r"^EXPOSE ", dockerfile, re.M)
    r = rendered["default"]
    container = r.container(app)
    assert container["ports"][0] == {"name": "http", "containerPort": port, "protocol": "TCP"}
    # Only the gateway has a second listener (test_the_internal_port_agrees).
    assert [p["name"] for p in container["ports"]] == (
        ["http", "internal"] if app == "gateway" else ["http"]
    )
    assert env_of(container)["PORT"] == str(port)
    service = r.get("Service", component_name(app))
    assert service["spec"]["ports"] == [
        {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}
    ]
    # The probes call the public port; the internal one answers only /internal/*.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http", probe


def test_the_internal_port_agrees(values: dict[str, Any], rendered: dict[str, Rendered]) -> None:
    """The gateway's INTERNAL_PORT: its settings, the worker's default URL, the chart's values,
    container port, env, Service and test pod, and the docs."""
    gateway, worker = settings("gateway"), settings("worker")
    port = values["gateway"]["internalPort"]
    assert port == gateway.DEFAULT_INTERNAL_PORT == gateway.INTERNAL_LISTENER.default_port
    assert gateway.INTERNAL_LISTENER.port_variable == "INTERNAL_PORT"
    assert port != values["gateway"]["port"]
    assert urlsplit(worker.DEFAULT_GATEWAY_INTERNAL_URL).port == port

    r = rendered["default"]
    container = r.container("gateway")
    assert container["ports"][1] == {"name": "internal", "containerPort": port, "protocol": "TCP"}
    assert env_of(container)["INTERNAL_PORT"] == str(port)
    internal = r.get("Service", f"{component_name('gateway')}-internal")
    assert internal["spec"]["type"] == "ClusterIP"
    assert internal["spec"]["ports"] == [
        {"name": "internal", "port": port, "targetPort": "internal", "protocol": "TCP"}
    ]
    public = r.get("Service", component_name("gateway"))
    assert internal["spec"]["selector"] == public["spec"]["selector"]
    command = r.get("Pod", component_name("tracecheck"))["spec"]["containers"][0]["command"]
    assert command[command.index("--gateway-internal-port") + 1] == str(port)

    readme = (REPO / "README.md").read_text()
    row = re.search(r"^\| `INTERNAL_PORT` \| gateway \| (.+) \|$", readme, re.M)
    assert row and f"Default {port}" in row.group(1), "README: the INTERNAL_PORT row"
    row = re.search(r"^\| `GATEWAY_INTERNAL_URL` \| worker \| (.+) \|$", readme, re.M)
    assert row and worker.DEFAULT_GATEWAY_INTERNAL_URL in row.group(1), "README: its worker row"
    deploy = (REPO / "docs" / "deploy-kubernetes.md").read_text()
    assert f"| worker | gateway (internal listener, `/internal/quota`) | {port} |" in deploy
    assert "TANDEM_TRUSTED_PATHS" not in readme + deploy


def test_skaffold_port_forwards(values: dict[str, Any], rendered: dict[str, Rendered]) -> None:
    config = skaffold_config()
    forwards = {f["resourceName"]: f for f in config["portForward"]}
    grafana_profile = next(p for p in config["profiles"] if p["name"] == "grafana")
    forwards.update(
        {
            p["value"]["resourceName"]: p["value"]
            for p in grafana_profile["patches"]
            if p["path"] == "/portForward/-"
        }
    )
    expected = {
        component_name("gateway"): values["gateway"]["port"],
        component_name("tempo"): values["tempo"]["ports"]["http"],
        component_name("grafana"): values["grafana"]["port"],
    }
    assert {name: f["port"] for name, f in forwards.items()} == expected
    services = {d["metadata"]["name"]: d for d in rendered["grafana"].of_kind("Service")}
    release_ns = config["deploy"]["helm"]["releases"][0]["namespace"]
    for name, f in forwards.items():
        assert f["resourceType"] == "service" and f["namespace"] == release_ns
        assert f["port"] in [p["port"] for p in services[name]["spec"]["ports"]], name
        assert f["localPort"] == f["port"]


# --- URLs between the components ---------------------------------------------------


def test_services_find_each_other(values: dict[str, Any], rendered: dict[str, Rendered]) -> None:
    r = rendered["default"]
    gateway, worker = env_of(r.container("gateway")), env_of(r.container("worker"))
    assert gateway["WORKER_URL"] == f"http://{component_name('worker')}:{values['worker']['port']}"
    assert (
        worker["GATEWAY_INTERNAL_URL"]
        == f"http://{component_name('gateway')}-internal:{values['gateway']['internalPort']}"
    )
    collector = f"http://{component_name('collector')}:{values['collector']['ports']['otlpGrpc']}"
    for env in (gateway, worker):
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == collector
        assert env["OTEL_EXPORTER_OTLP_INSECURE"] == "true"
    col_env = env_of(r.container("collector"))
    assert (
        col_env["TEMPO_OTLP_ENDPOINT"]
        == f"{component_name('tempo')}:{values['tempo']['ports']['otlpGrpc']}"
    )
    for name in (
        component_name("worker"),
        component_name("gateway"),
        f"{component_name('gateway')}-internal",
        component_name("collector"),
        component_name("tempo"),
    ):
        r.get("Service", name)


def test_external_endpoints(rendered: dict[str, Rendered]) -> None:
    env = env_of(rendered["external-collector"].container("gateway"))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4317"
    assert env["OTEL_EXPORTER_OTLP_INSECURE"] == "true"
    col_env = env_of(rendered["external-tempo"].container("collector"))
    assert col_env["TEMPO_OTLP_ENDPOINT"] == "tempo.observability.svc:4317"


def test_tracecheck_targets_the_release(
    values: dict[str, Any], rendered: dict[str, Rendered]
) -> None:
    pod = rendered["default"].get("Pod", component_name("tracecheck"))
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = pod["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "tandem_tracecheck"]
    args = dict(zip(command[3::2], command[4::2], strict=True))
    assert args == {
        "--gateway-url": f"http://{component_name('gateway')}:{values['gateway']['port']}",
        "--gateway-internal-port": str(values["gateway"]["internalPort"]),
        "--tempo-url": f"http://{component_name('tempo')}:{values['tempo']['ports']['http']}",
        "--metrics-url": f"http://{component_name('collector')}:{values['collector']['ports']['prometheus']}/metrics",
    }


def test_make_e2e_runs_tracecheck_with_the_same_flags(values: dict[str, Any]) -> None:
    mk = (REPO / "mk" / "kubernetes.mk").read_text()
    assert (
        "-m tandem_tracecheck --gateway-url $(GATEWAY_URL) "
        "--gateway-internal-port $(GATEWAY_INTERNAL_PORT) \\\n"
        "\t  --tempo-url $(TEMPO_URL) --metrics-url $(METRICS_URL)" in mk
    )
    default = re.search(r"^GATEWAY_INTERNAL_PORT \?= (\d+)$", mk, re.MULTILINE)
    assert default and int(default.group(1)) == values["gateway"]["internalPort"]


# --- Environment variables -----------------------------------------------------------


def test_resource_attributes(chart_meta: dict[str, Any], rendered: dict[str, Rendered]) -> None:
    for app in APPS:
        env = env_of(rendered["default"].container(app))
        attrs = dict(kv.split("=", 1) for kv in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
        assert attrs["service.version"] == chart_meta["appVersion"]
        assert attrs["k8s.pod.name"] == "$(POD_NAME)"
        assert attrs["k8s.namespace.name"] == "$(POD_NAMESPACE)"
        assert attrs["k8s.node.name"] == "$(NODE_NAME)"
        assert env["OTEL_SERVICE_NAME"] == app


@pytest.mark.parametrize("app", APPS)
def test_downward_api_helpers_come_first(app: str, rendered: dict[str, Rendered]) -> None:
    """$(VAR) only expands variables defined earlier in the list."""
    env = rendered["default"].container(app)["env"]
    names = [e["name"] for e in env]
    for helper, field in DOWNWARD_API_HELPERS.items():
        entry = env[names.index(helper)]
        assert entry["valueFrom"]["fieldRef"]["fieldPath"] == field
        assert names.index(helper) < names.index("OTEL_RESOURCE_ATTRIBUTES")


def caller_urls(value_set: str, app: str) -> set[str]:
    """The <NAME>_URL variables the chart gives `app` as a caller of the guide's service: read
    once `app` calls it (docs/add-a-service.md, step 2), which this repository's do not."""
    if value_set != ADD_A_SERVICE:
        return set()
    extra = Guide.read().values()["extraServices"]
    return {
        f"{name.upper().replace('-', '_')}_URL"
        for name, service in extra.items()
        if app in service.get("callers", [])
    }


@pytest.mark.parametrize("app", APPS)
def test_every_env_var_the_chart_sets_is_read_by_the_service(
    app: str, rendered: dict[str, Rendered]
) -> None:
    known = set(settings(app).ENV_VARS) | telemetry_env_vars() | set(DOWNWARD_API_HELPERS)
    for name, r in rendered.items():
        set_by_chart = set(env_of(r.container(app)))
        unknown = set_by_chart - known - caller_urls(name, app)
        assert not unknown, f"{name}: the chart sets {sorted(unknown)}, which {app} does not read"


@pytest.mark.parametrize("app", APPS)
def test_the_service_contract_is_what_the_chart_relies_on(app: str) -> None:
    """The variables the chart needs each service to honour, RELOAD included
    (skaffold's dev profile turns hypercorn's reloader on with it)."""
    own = set(settings(app).ENV_VARS)
    expected = {"HOST", "PORT", "WEB_CONCURRENCY", "GRACEFUL_TIMEOUT", "RELOAD"}
    expected |= (
        {"INTERNAL_PORT", "WORKER_URL", "WORKER_TIMEOUT"}
        if app == "gateway"
        else {"GATEWAY_INTERNAL_URL"}
    )
    assert expected <= own, f"{app}.settings.ENV_VARS lacks {sorted(expected - own)}"


def test_dev_profile_values_exist_in_the_chart(values: dict[str, Any]) -> None:
    for key in skaffold_dev_values():
        parent = key.rpartition(".")[0]
        if parent.endswith(".env"):
            assert isinstance(lookup(values, parent), dict)
            continue
        lookup(values, key)


def test_dev_sync_targets_the_installed_packages() -> None:
    """Skaffold's manual sync copies into the venv the Dockerfiles build."""
    dev = next(p for p in skaffold_config()["profiles"] if p["name"] == "dev")
    syncs = [p["value"]["manual"] for p in dev["patches"] if p["path"].endswith("/sync")]
    assert syncs
    for rules in syncs:
        for rule in rules:
            src_dir = rule["strip"].rstrip("/")
            assert (REPO / "services" / src_dir).is_dir(), src_dir
            assert rule["src"] == f"{rule['strip']}**/*.py"
            package = src_dir.rsplit("/", 1)[-1]
            assert rule["dest"] == f"/opt/venv/lib/python3.12/site-packages/{package}"
    # The default base's Python is the one in the paths; tests/containers writes to them as UID
    # 10001.
    dockerfile = (REPO / "services" / "Dockerfile").read_text()
    assert "python3 -m venv /opt/venv" in dockerfile
    assert re.search(r"^ARG BASE_IMAGE=python:3\.12\.", dockerfile, re.M)
    chown = re.search(r'chown -R 10001:10001 ((?:"\$site/[^"]+" ?)+)', dockerfile)
    assert chown, "the DEV_SYNC image hands the synced packages to UID 10001"
    owned = set(re.findall(r'"\$site/([^"]+)"', chown.group(1)))
    for rules in syncs:
        for rule in rules:
            package = rule["dest"].rsplit("/", 1)[-1]
            expected = "$SERVICE" if package in APPS else package
            assert expected in owned, f"skaffold syncs into {package}, which UID 10001 cannot write"
    # Every package the image installs from services/ is synced: the service and the shared ones.
    installs = re.search(r'set -- ((?:"?/src/[^\s"]+"? )+)', dockerfile)
    assert installs, "the Dockerfile installs Tandem's packages with `set -- /src/...`"
    artifacts = skaffold_config()["build"]["artifacts"]
    for patch in dev["patches"]:
        if patch["path"].endswith("/sync"):
            app = artifacts[int(patch["path"].split("/")[3])]["docker"]["buildArgs"]["SERVICE"]
            sources = re.findall(r'/src/([^\s"]+)', installs.group(1).replace("$SERVICE", app))
            synced = {rule["strip"].split("/", 1)[0] for rule in patch["value"]["manual"]}
            assert synced == set(sources), f"{app}: skaffold syncs {sorted(synced)}"


def test_podman_settings_agree() -> None:
    """make's builds and the container suite's runs ask podman for the same runtime and limits."""
    from tests.containers.engine import DEFAULT_PODMAN_RUNTIME, PODMAN_ULIMIT_CAP

    mk = (REPO / "mk" / "containers.mk").read_text()
    assert re.search(rf"^PODMAN_ULIMIT_CAP\s*:=\s*{PODMAN_ULIMIT_CAP}$", mk, re.M)
    assert re.search(rf"^PODMAN_RUNTIME\s*\?=\s*{DEFAULT_PODMAN_RUNTIME}$", mk, re.M)
