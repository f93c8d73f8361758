"""The chart's Grafana dashboards as Grafana gets them: valid JSON, every datasource they
name provisioned, and carried byte for byte by a ConfigMap that the dashboard provider reads.
tests/otelcol/test_dashboards.py runs their queries against real data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboards import DASHBOARDS, DASHBOARDS_DIR, datasources, panels
from tests.k8s.conftest import RELEASE, Rendered

GRAFANA = f"{RELEASE}-grafana"


def test_there_are_dashboards() -> None:
    assert {path.stem for path in DASHBOARDS} >= {"red", "service-graph", "pipeline", "overload"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_a_dashboard_is_valid_json_with_titled_panels(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert panels(dashboard)
    for panel in panels(dashboard):
        assert panel["title"] and panel["targets"], panel
        assert panel["gridPos"]["w"] <= 24


def test_dashboard_uids_are_unique() -> None:
    uids = [json.loads(path.read_text())["uid"] for path in DASHBOARDS]
    assert len(set(uids)) == len(uids), uids


def references(node: Any) -> Iterator[dict[str, Any]]:
    """Every `datasource` object anywhere in a dashboard: panels', targets', variables'."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                assert isinstance(value, dict), f"a datasource by name, not by uid: {value!r}"
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_every_datasource_a_dashboard_names_is_provisioned(
    path: Path, rendered: dict[str, Rendered]
) -> None:
    provisioned = {d["uid"]: d["type"] for d in datasources(rendered["grafana"])}
    found = list(references(json.loads(path.read_text())))
    assert found
    for reference in found:
        assert provisioned.get(reference["uid"]) == reference["type"], (reference, provisioned)


def test_the_configmap_carries_the_files_byte_for_byte_where_the_provider_reads(
    rendered: dict[str, Rendered],
) -> None:
    r = rendered["grafana"]
    data = r.get("ConfigMap", f"{GRAFANA}-dashboards")["data"]
    assert data == {path.name: path.read_text() for path in sorted(DASHBOARDS_DIR.glob("*.json"))}
    provider = yaml.safe_load(
        r.get("ConfigMap", f"{GRAFANA}-dashboard-provider")["data"]["dashboards.yaml"]
    )
    (source,) = provider["providers"]
    mounts = {m["name"]: m for m in r.container("grafana")["volumeMounts"]}
    assert mounts["dashboards"]["mountPath"] == source["options"]["path"]
    assert mounts["dashboard-provider"]["mountPath"] == "/etc/grafana/provisioning/dashboards"
    assert mounts["dashboards"]["readOnly"] and mounts["dashboard-provider"]["readOnly"]
    (deployment,) = [d for d in r.of_kind("Deployment") if d["metadata"]["name"] == GRAFANA]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dashboards"]["configMap"]["name"] == f"{GRAFANA}-dashboards"
    assert volumes["dashboard-provider"]["configMap"]["name"] == f"{GRAFANA}-dashboard-provider"


def test_the_tempo_datasource_links_traces_to_metrics_and_draws_the_service_map(
    rendered: dict[str, Rendered],
) -> None:
    by_uid = {d["uid"]: d for d in datasources(rendered["grafana"])}
    tempo = by_uid["tempo"]["jsonData"]
    assert tempo["tracesToMetrics"]["datasourceUid"] == "prometheus"
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus"
    prometheus = by_uid["prometheus"]["jsonData"]
    assert prometheus["exemplarTraceIdDestinations"] == [
        {"name": "trace_id", "datasourceUid": "tempo"}
    ]
