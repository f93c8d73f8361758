"""Real Prometheus for the tests: Debian's `prometheus` package (2.42), started on a free
loopback port with a configuration and storage of its own, exemplar storage on.

    prom = start_prometheus(stack, tmp_dir, collector_scrape_configs(otelcol_ports))
    prom.wait_for_targets()                      # every target scraped once, and up
    prom.wait_for_value('sum(traces_span_metrics_calls_total{...})', 12)
    prom.exemplars('traces_span_metrics_duration_seconds_bucket{...}')

Never the Debian service: each test run owns its process (stopped with the stack), its
port and its storage. Waits poll the HTTP API until the value appears, within a bound.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tandem_collector.ports import free_ports
from tandem_localstack import OtelcolPorts, Process, Stack, loopback_url

INSTALL = "apt-get install prometheus (Debian's package, 2.42, has promtool; .ci/run installs it)"

# The chart's scrape jobs for the Collector (charts/tandem/files/prometheus.yaml has the
# same names; a test holds them equal). The exporter's endpoint keeps the labels it serves
# (honor_labels): job="tandem/gateway" as the services' resource names them, instead of
# the scrape job's. The service graph's series, which carry no job, get the scrape job's.
COLLECTOR_METRICS_JOB = "collector"
COLLECTOR_TELEMETRY_JOB = "collector-telemetry"

Sample = tuple[dict[str, str], float]


def debian_prometheus_tool(name: str) -> Path:
    """/usr/bin/`name` from Debian's prometheus package (prometheus, promtool), else `name`
    on PATH, or a failure that says how to install it (never a skip)."""
    packaged = Path("/usr/bin") / name
    if packaged.is_file():
        return packaged
    on_path = shutil.which(name)
    if on_path is None:
        pytest.fail(f"{name} is missing: {INSTALL}")
    return Path(on_path)


def prometheus_binary() -> Path:
    return debian_prometheus_tool("prometheus")


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    """The prometheus binary; the test fails, loudly, without it."""
    return prometheus_binary()


def collector_scrape_configs(ports: OtelcolPorts, host: str = "127.0.0.1") -> list[dict[str, Any]]:
    """The chart's two Collector jobs, pointed at a local Collector's ports."""
    return [
        {
            "job_name": COLLECTOR_METRICS_JOB,
            "honor_labels": True,
            "static_configs": [{"targets": [f"{host}:{ports.prometheus}"]}],
        },
        {
            "job_name": COLLECTOR_TELEMETRY_JOB,
            "static_configs": [{"targets": [f"{host}:{ports.telemetry}"]}],
        },
    ]


class PrometheusError(AssertionError):
    """An API call failed, or a wait ran out: the message says what was last seen."""


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API (https://prometheus.io/docs/prometheus/2.42/querying/api/)."""

    url: str
    process: Process
    config_file: Path

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"GET /api/v1/{path} {params}: {response.status_code} {body}")
        return body["data"]

    def query(self, expr: str) -> list[Sample]:
        """An instant query's vector, as (labels, value) pairs."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr}: a {data['resultType']}, not a vector")
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def value(self, expr: str) -> float | None:
        """The one value of a query that gives one sample (a sum, say), None if it gives none."""
        samples = self.query(expr)
        if len(samples) > 1:
            raise PrometheusError(f"{expr}: {len(samples)} samples, wanted one: {samples}")
        return samples[0][1] if samples else None

    def wait_until(
        self,
        expr: str,
        done: Callable[[list[Sample]], bool],
        *,
        timeout: float = 60.0,
        what: str = "",
    ) -> list[Sample]:
        """Poll `expr` until `done(samples)`; fail after `timeout` seconds with the last seen."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.query(expr)
            if done(samples):
                return samples
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"{what or expr}: not there after {timeout:.0f}s; last seen {samples}"
                )
            self.check_running()
            time.sleep(0.25)

    def wait_for_value(self, expr: str, expected: float, *, timeout: float = 60.0) -> None:
        """Until the single-sample `expr` equals `expected`; a value past it fails at once
        (counts only grow, so waiting longer cannot help)."""

        def reached(samples: list[Sample]) -> bool:
            if len(samples) > 1:
                raise PrometheusError(f"{expr}: {len(samples)} samples, wanted one: {samples}")
            if samples and samples[0][1] > expected:
                raise PrometheusError(f"{expr}: {samples[0][1]}, past the expected {expected}")
            return bool(samples) and samples[0][1] == expected

        self.wait_until(expr, reached, timeout=timeout, what=f"{expr} == {expected}")

    def exemplars(
        self, expr: str, *, start: float | None = None, end: float | None = None
    ) -> list[dict[str, Any]]:
        """/api/v1/query_exemplars: each series' labels (`seriesLabels`) and its `exemplars`,
        each with `labels` (trace_id, span_id), `value` and `timestamp`. Default window: the
        last hour."""
        now = time.time()
        data: list[dict[str, Any]] = self.api(
            "query_exemplars",
            query=expr,
            start=str(start if start is not None else now - 3600),
            end=str(end if end is not None else now + 60),
        )
        return data

    def wait_for_exemplars(self, expr: str, *, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Until `expr` has at least one exemplar; every exemplar found, flattened: each its
        labels, value and timestamp, plus `seriesLabels`."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                {**exemplar, "seriesLabels": series["seriesLabels"]}
                for series in self.exemplars(expr)
                for exemplar in series["exemplars"]
            ]
            if found:
                return found
            if time.monotonic() > deadline:
                raise PrometheusError(f"no exemplar for {expr} after {timeout:.0f}s")
            self.check_running()
            time.sleep(0.25)

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    def wait_for_targets(self, *, timeout: float = 30.0) -> None:
        """Until every configured target has been scraped, successfully."""
        deadline = time.monotonic() + timeout
        while True:
            targets = self.targets()
            if targets and all(t["health"] == "up" for t in targets):
                return
            if time.monotonic() > deadline:
                seen = [(t["scrapePool"], t["health"], t["lastError"]) for t in targets]
                raise PrometheusError(f"targets not up after {timeout:.0f}s: {seen}")
            self.check_running()
            time.sleep(0.25)

    def rules(self) -> list[dict[str, Any]]:
        """/api/v1/rules: the rule groups loaded, with each rule's health and last error."""
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def alerts(self) -> list[dict[str, Any]]:
        """/api/v1/alerts: the alerts pending or firing."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def check_running(self) -> None:
        if self.process.popen.poll() is not None:
            raise PrometheusError(
                f"prometheus exited with {self.process.popen.returncode}:\n{self.process.output()}"
            )


def start_prometheus(
    stack: Stack,
    workdir: Path,
    scrape_configs: Sequence[dict[str, Any]],
    *,
    binary: Path | None = None,
    rule_files: Iterable[Path] = (),
    interval: str = "1s",
    name: str = "prometheus",
) -> Prometheus:
    """Prometheus on a free loopback port, scraping and evaluating rules every `interval`,
    exemplar storage on, its storage in `workdir`; stopped with `stack`."""
    binary = binary or prometheus_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": list(scrape_configs),
        "rule_files": [str(path) for path in rule_files],
    }
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    (port,) = free_ports(1)
    process = stack.start_command(
        name,
        [
            str(binary),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
            # No console templates from /etc: the Debian package's defaults point there.
            f"--web.console.templates={workdir / 'consoles'}",
            f"--web.console.libraries={workdir / 'console_libraries'}",
        ],
        {},
    )
    url = loopback_url(port)
    stack.wait_ready(process, f"{url}/-/ready", timeout=60)
    return Prometheus(url, process, config_file)
