"""The chart's Grafana dashboards (charts/tandem/files/dashboards/*.json), read for the tests:
their panels' queries, the metric names in them, and the queries as Grafana would send them
to Prometheus, with the dashboard's variables given sensible values."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.k8s.conftest import RELEASE, Rendered

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS_DIR = REPO / "charts" / "tandem" / "files" / "dashboards"
DASHBOARDS = sorted(DASHBOARDS_DIR.glob("*.json"))

# What a user would pick, and what Grafana puts in for its own variables. A window of
# minutes covers every sample the tests' Prometheus (scraping every second) has.
VARIABLES = {
    "service": "gateway",
    "route": "/api/work",
    "__rate_interval": "5m",
    "__interval": "15s",
    "__range": "5m",
}

# PromQL words that are not metric names.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip


# What Grafana's Tempo datasource asks Prometheus to draw a service map (its serviceMap
# setting names the datasource): calls, failures and server latency per edge, over the
# dashboard's range.
SERVICE_MAP_QUERIES = [
    "sum by (client, server) (rate(traces_service_graph_request_total[5m]))",
    "sum by (client, server) (rate(traces_service_graph_request_failed_total[5m]))",
    "sum by (client, server) (rate(traces_service_graph_request_server_seconds_sum[5m]))",
    "histogram_quantile(0.9, sum by (client, server, le) "
    "(rate(traces_service_graph_request_server_seconds_bucket[5m])))",
]


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    ref_id: str
    datasource: dict[str, Any]
    target: dict[str, Any]

    @property
    def expr(self) -> str | None:
        expr = self.target.get("expr")
        return expr if isinstance(expr, str) else None

    @property
    def id(self) -> str:
        return f"{self.dashboard}: {self.panel} [{self.ref_id}]"


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too; rows themselves are not panels."""
    found = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_targets(path: Path) -> list[Target]:
    """Each query of each panel, with the datasource it goes to (its own, else the panel's)."""
    dashboard = load(path)
    return [
        Target(
            path.stem,
            panel["title"],
            target.get("refId", "?"),
            target.get("datasource") or panel.get("datasource") or {},
            target,
        )
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def substitute(expr: str) -> str:
    """`expr` with $var, ${var} and [[var]] replaced by VARIABLES' values."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in VARIABLES:
            raise KeyError(f"no test value for the variable ${name} in {expr!r}")
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names (in braces, or in by/without/on/ignoring/group_* lists), durations
    or numbers."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\(|\s+(?:by|without)\b)?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in KEYWORDS or re.fullmatch(r"\d+\w*", word):
            continue
        names.add(word)
    return names


def datasources(rendered: Rendered) -> list[dict[str, Any]]:
    """The datasources the chart provisions for Grafana, with Grafana's escape of a literal
    `$` in provisioning files ($$) undone."""
    configmap = rendered.get("ConfigMap", f"{RELEASE}-grafana")
    text = configmap["data"]["datasources.yaml"].replace("$$", "$")
    found: list[dict[str, Any]] = yaml.safe_load(text)["datasources"]
    return found


def traces_to_metrics_queries(rendered: Rendered) -> dict[str, str]:
    """The Tempo datasource's tracesToMetrics queries, by name."""
    (tempo,) = [d for d in datasources(rendered) if d["type"] == "tempo"]
    return {q["name"]: q["query"] for q in tempo["jsonData"]["tracesToMetrics"]["queries"]}


@dataclass(frozen=True)
class Variable:
    """A dashboard's query variable: label_values(selector, label)."""

    name: str
    selector: str
    label: str


def variables(path: Path) -> list[Variable]:
    found = []
    for variable in load(path).get("templating", {}).get("list", []):
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
        assert match, f"{path.name}: ${variable['name']} is not label_values(selector, label)"
        found.append(Variable(variable["name"], match.group(1), match.group(2)))
    return found
