"""The collector and Tempo configurations: one file each, shipped unchanged, valid for the
pinned versions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tandem_localstack import OtelcolPorts
from tandem_telemetry.bootstrap import HTTP_DURATION_BUCKETS
from tests.k8s.conftest import CHART, DATA_DIR, RELEASE, Rendered, helm_template, tool
from tests.prometheus import collector_scrape_configs

OTELCOL = CHART / "files" / "otelcol-config.yaml"
TEMPO = CHART / "files" / "tempo.yaml"
TEMPO_MANIFEST = DATA_DIR / "tempo-v3.0.3-manifest.yaml"


def test_the_chart_stands_alone() -> None:
    """No symlink anywhere in the chart: a copied, vendored or packaged chart must carry its
    files."""
    links = [str(path.relative_to(CHART)) for path in CHART.rglob("*") if path.is_symlink()]
    assert links == []
    assert OTELCOL.is_file() and TEMPO.is_file()


@pytest.mark.parametrize("value_set", ["default", "persistence", "grafana"])
def test_configmaps_carry_the_files_byte_for_byte(
    value_set: str, rendered: dict[str, Rendered]
) -> None:
    r = rendered[value_set]
    assert (
        r.get("ConfigMap", f"{RELEASE}-collector")["data"]["otelcol-config.yaml"]
        == OTELCOL.read_text()
    )
    assert r.get("ConfigMap", f"{RELEASE}-tempo")["data"]["tempo.yaml"] == TEMPO.read_text()


def test_collector_pipelines() -> None:
    config = yaml.safe_load(OTELCOL.read_text())
    pipelines = config["service"]["pipelines"]
    # Spans go to Tempo and into the two connectors, whose metrics join the services' own
    # on the Prometheus endpoint (docs/metrics.md).
    assert pipelines["traces"] == {
        "receivers": ["otlp"],
        "processors": ["memory_limiter", "batch"],
        "exporters": ["otlp_grpc/tempo", "span_metrics", "service_graph"],
    }
    assert pipelines["metrics"] == {
        "receivers": ["otlp", "span_metrics", "service_graph"],
        "processors": ["memory_limiter", "batch"],
        "exporters": ["prometheus"],
    }
    # Exemplars are served in OpenMetrics only.
    assert config["exporters"]["prometheus"]["enable_open_metrics"] is True
    assert config["connectors"]["span_metrics"]["exemplars"] == {"enabled": True}
    assert default_of(config["exporters"]["prometheus"]["endpoint"]) == "0.0.0.0:8889"
    assert config["exporters"]["otlp_grpc/tempo"]["endpoint"] == "${env:TEMPO_OTLP_ENDPOINT}"
    assert config["service"]["extensions"] == ["health_check"]


def default_of(value: str | int) -> str:
    """A setting's value as the chart runs it: `${env:VAR:-default}` is its default (the
    chart sets no OTELCOL_* variable; tests and `make run` listen elsewhere through them)."""
    text = str(value)
    match = re.fullmatch(r"\$\{env:OTELCOL_[A-Z_]+:-(.*)\}", text)
    return match.group(1) if match else text


def port_of(endpoint: str) -> int:
    return int(default_of(endpoint).rsplit(":", 1)[1])


def test_collector_ports_agree_with_values(values: dict[str, Any]) -> None:
    config = yaml.safe_load(OTELCOL.read_text())
    ports = values["collector"]["ports"]
    protocols = config["receivers"]["otlp"]["protocols"]
    assert port_of(protocols["grpc"]["endpoint"]) == ports["otlpGrpc"]
    assert port_of(protocols["http"]["endpoint"]) == ports["otlpHttp"]
    assert port_of(config["extensions"]["health_check"]["endpoint"]) == ports["health"]
    assert port_of(config["exporters"]["prometheus"]["endpoint"]) == ports["prometheus"]
    (reader,) = config["service"]["telemetry"]["metrics"]["readers"]
    assert int(default_of(reader["pull"]["exporter"]["prometheus"]["port"])) == ports["telemetry"]


def test_the_collector_listens_on_every_interface_unless_told() -> None:
    """A Service reaches the pod's IP: every listener's default binds all interfaces."""
    text = OTELCOL.read_text()
    listeners = re.findall(r"\$\{env:(OTELCOL_[A-Z_]+):-([^}]*)\}", text)
    assert {name for name, _ in listeners} == {
        "OTELCOL_OTLP_GRPC_ENDPOINT",
        "OTELCOL_OTLP_HTTP_ENDPOINT",
        "OTELCOL_HEALTH_ENDPOINT",
        "OTELCOL_PROMETHEUS_ENDPOINT",
        "OTELCOL_TELEMETRY_HOST",
        "OTELCOL_TELEMETRY_PORT",
    }
    for name, default in listeners:
        assert default.startswith("0.0.0.0") or name == "OTELCOL_TELEMETRY_PORT", name


def test_collector_env_vars_are_set_by_the_chart(rendered: dict[str, Rendered]) -> None:
    """Every ${env:VAR} in the config is set on the container, but the listeners' OTELCOL_*,
    whose defaults are the chart's ports (and which it must then leave alone)."""
    config_lines = "\n".join(
        line for line in OTELCOL.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    required = set(re.findall(r"\$\{env:([A-Z0-9_]+)(?::-[^}]*)?\}", config_lines))
    given = {e["name"] for e in rendered["default"].container("collector")["env"]}
    listeners = {name for name in required if name.startswith("OTELCOL_")}
    assert required - listeners and required - listeners <= given
    assert not listeners & given


def test_tempo_ports_agree_with_values(values: dict[str, Any]) -> None:
    config = yaml.safe_load(TEMPO.read_text())
    ports = values["tempo"]["ports"]
    assert config["server"]["http_listen_port"] == ports["http"]
    assert config["server"]["grpc_listen_port"] == ports["grpc"]
    assert (
        port_of(config["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])
        == ports["otlpGrpc"]
    )


def test_tempo_env_vars_are_set_by_the_chart(rendered: dict[str, Rendered]) -> None:
    config_lines = "\n".join(
        line for line in TEMPO.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    used = set(re.findall(r"\$\{([A-Z0-9_]+)(?::-[^}]*)?\}", config_lines))
    container = rendered["default"].container("tempo")
    assert {e["name"] for e in container["env"]} == used
    assert "-config.expand-env=true" in container["args"]


def expand_env(text: str, env: dict[str, str]) -> str:
    """${VAR:-default} filled from `env` (the default when unset or empty), as Tempo's
    -config.expand-env does."""

    def fill(match: re.Match[str]) -> str:
        return env.get(match[1]) or match[2]

    return re.sub(r"\$\{([A-Z0-9_]+):-([^}]*)\}", fill, text)


def test_retention_reaches_the_key_tempos_backend_worker_reads(
    helm_env: dict[str, str], chart_package: Path
) -> None:
    """Tempo 3.0.3's backend worker deletes blocks by backend_worker.compaction.block_retention
    (default 336h); the chart's tempo.retention must land there, through the container's env."""
    text = helm_template(
        tool("helm"), helm_env, chart_package, "--set", "tempo.retention=72h"
    ).stdout
    r = Rendered("retention-72h", [], text, [d for d in yaml.safe_load_all(text) if d])
    env = {e["name"]: e["value"] for e in r.container("tempo")["env"]}
    config = yaml.safe_load(
        expand_env(r.get("ConfigMap", f"{RELEASE}-tempo")["data"]["tempo.yaml"], env)
    )
    assert config["backend_worker"]["compaction"]["block_retention"] == "72h"
    # The scheduler's compaction section also has a block_retention, which retention never
    # reads: it must not look like the setting.
    scheduler = config.get("backend_scheduler", {}).get("provider", {}).get("compaction", {})
    assert "block_retention" not in scheduler.get("compaction", {})
    manifest = yaml.safe_load(TEMPO_MANIFEST.read_text())
    assert manifest["backend_worker"]["compaction"]["block_retention"] == "336h0m0s"


def unknown_keys(config: Any, manifest: Any, path: str = "") -> list[str]:
    """Keys of config that Tempo's manifest does not have. Where the manifest
    holds an empty map or null (free-form: receivers, overrides), anything goes."""
    if not isinstance(config, dict):
        return []
    if not isinstance(manifest, dict):
        return [] if manifest in ({}, None) else [f"{path} (not a section)"]
    if not manifest:
        return []
    out = []
    for key, value in config.items():
        if key not in manifest:
            out.append(f"{path}.{key}".lstrip("."))
        else:
            out += unknown_keys(value, manifest[key], f"{path}.{key}")
    return out


def test_tempo_config_fits_the_pinned_version(values: dict[str, Any]) -> None:
    """Tempo refuses unknown keys: check ours against 3.0.3's full manifest."""
    assert values["tempo"]["image"]["tag"] == "3.0.3", (
        "re-vendor the manifest in tests/k8s/data for a new Tempo"
    )
    manifest = yaml.safe_load(TEMPO_MANIFEST.read_text())
    # Substitute the ${VAR:-default}s first, as -config.expand-env does.
    text = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", TEMPO.read_text())
    config = yaml.safe_load(text)
    assert unknown_keys(config, manifest) == []
    # 3.x dropped these 2.x blocks; monolithic mode needs no Kafka.
    for gone in ("ingester", "compactor", "ingester_client", "metrics_generator_client"):
        assert gone not in config
    assert config.get("target", "all") == "all"
    assert "ingest" not in config
    assert config["storage"]["trace"]["backend"] == "local"


def test_unknown_key_check_catches_2x_blocks() -> None:
    manifest = yaml.safe_load(TEMPO_MANIFEST.read_text())
    assert unknown_keys(
        {"compactor": {"compaction": {}}, "server": {"http_listen_prot": 1}}, manifest
    ) == [
        "compactor",
        "server.http_listen_prot",
    ]


def seconds(duration: str) -> float:
    """A Collector duration as the connectors' buckets write it: `5ms`, `2.5s`."""
    match = re.fullmatch(r"([0-9.]+)(ms|s)", duration)
    assert match, duration
    return float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)


def test_connector_buckets_are_the_services_http_duration_buckets() -> None:
    """Span metrics, the service graph and the services' own request durations share bucket
    boundaries, so an SLO's latency threshold is a bucket boundary in each."""
    connectors = yaml.safe_load(OTELCOL.read_text())["connectors"]
    span_metrics = connectors["span_metrics"]["histogram"]
    assert span_metrics["unit"] == "s"
    assert [seconds(b) for b in span_metrics["explicit"]["buckets"]] == list(HTTP_DURATION_BUCKETS)
    graph = connectors["service_graph"]["latency_histogram_buckets"]
    assert [seconds(b) for b in graph] == list(HTTP_DURATION_BUCKETS)


def test_prometheus_scrapes_what_the_tests_scrape(rendered: dict[str, Rendered]) -> None:
    """The chart's Prometheus (on with Grafana) has the jobs tests/prometheus.py runs against
    a local Collector, found in the cluster through the collector's headless Service; it
    loads every rule file of files/rules/ (a ConfigMap of them, byte for byte)."""
    r = rendered["grafana"]
    config = yaml.safe_load(r.get("ConfigMap", f"{RELEASE}-prometheus")["data"]["prometheus.yml"])
    local = collector_scrape_configs(OtelcolPorts(0, 0, 0, 8889, 8888), host="pods")
    headless = f"{RELEASE}-collector-pods.{r.docs[0]['metadata']['namespace']}.svc"
    assert headless.split(".")[0] in {d["metadata"]["name"] for d in r.of_kind("Service")}
    in_cluster = []
    for local_job in local:
        job = dict(local_job)
        (static,) = job.pop("static_configs")
        (target,) = static["targets"]
        job["dns_sd_configs"] = [
            {"names": [headless], "type": "A", "port": int(target.rsplit(":", 1)[1])}
        ]
        in_cluster.append(job)
    assert config["scrape_configs"] == in_cluster
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    rules = r.get("ConfigMap", f"{RELEASE}-prometheus-rules").get("data") or {}
    assert rules == {
        p.name: p.read_text() for p in sorted((CHART / "files" / "rules").glob("*.yaml"))
    }
    container = r.container("prometheus")
    assert "--enable-feature=exemplar-storage" in container["args"]
    assert "prometheus" not in {
        d["metadata"]["labels"]["app.kubernetes.io/component"] for d in rendered["default"].docs
    }
