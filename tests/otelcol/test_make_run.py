"""`make run COLLECTOR=otelcol`: the real Collector, with the chart's configuration, between
the services and the local trace store; the ports and the services see no difference."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tandem_localstack import loopback_url
from tandem_tracecheck import TempoClient
from tests.integration.test_make_run import free_run_ports, launched
from tests.k8s.conftest import CHART
from tests.support import make_own_lines

CONFIG = CHART / "files" / "otelcol-config.yaml"
REPO = CHART.parents[1]


def test_make_run_puts_the_real_collector_in_between(otelcol: Path, tmp_path: Path) -> None:
    ports = free_run_ports()
    env = {**ports, "TANDEM_RUN_OTELCOL": str(otelcol), "TANDEM_RUN_OTELCOL_CONFIG": str(CONFIG)}
    with launched(env, tmp_path) as launch:
        launch.wait_settled()
        assert launch.banner.is_set(), launch.output()
        assert "the real OpenTelemetry Collector (otelcol-tandem)" in launch.output()
        gateway = loopback_url(int(ports["PORT"]))
        answer = httpx.get(f"{gateway}/api/work", params={"tasks": 1}, timeout=30)
        assert answer.status_code == 200, answer.text
        trace_id = answer.json()["trace_id"]
        with TempoClient(loopback_url(int(ports["TANDEM_COLLECTOR_QUERY_PORT"]))) as tempo:
            spans = tempo.wait_for_trace(trace_id, spans=7, timeout=60, settle=0.2)
        assert len(spans) == 7
        # The metrics port is the Collector's Prometheus exporter now: it says so itself,
        # once the services' next metric export (1 s) and its batch (1 s) have gone through.
        metrics = loopback_url(int(ports["TANDEM_COLLECTOR_PROMETHEUS_PORT"]))
        scrape = scrape_until(f"{metrics}/metrics", "http_server_request_duration_seconds")
        assert "http_server_request_duration_seconds" in scrape, scrape[-2000:]
        assert 'otel_scope_name="' in scrape
        assert "Everything is ready" in launch.log("otelcol")
    assert launch.finish() == 0, launch.output()


def scrape_until(url: str, metric: str, timeout: float = 60.0) -> str:
    """The endpoint's text once it serves `metric`; the last text, if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(url, timeout=10).text
        if metric in text or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_a_missing_binary_is_named_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "otelcol-tandem"
    env = {
        **free_run_ports(),
        "TANDEM_RUN_OTELCOL": str(missing),
        "TANDEM_RUN_OTELCOL_CONFIG": str(CONFIG),
    }
    with launched(env, tmp_path) as launch:
        launch.wait_settled()
        assert launch.finish() == 1, launch.output()
    assert launch.stderr == [
        f"make run: TANDEM_RUN_OTELCOL={str(missing)!r} is not a file (make collector builds it)"
    ]


def test_a_missing_configuration_is_named_in_one_line(otelcol: Path, tmp_path: Path) -> None:
    missing = tmp_path / "otelcol.yaml"
    env = {**free_run_ports(), "TANDEM_RUN_OTELCOL": str(otelcol)}
    env["TANDEM_RUN_OTELCOL_CONFIG"] = str(missing)
    with launched(env, tmp_path) as launch:
        launch.wait_settled()
        assert launch.finish() == 1, launch.output()
    assert launch.stderr == [
        f"make run: TANDEM_RUN_OTELCOL_CONFIG={str(missing)!r} is not a Collector configuration "
        "file"
    ]


def test_a_configuration_without_the_binary_is_refused_not_ignored(tmp_path: Path) -> None:
    env = {**free_run_ports(), "TANDEM_RUN_OTELCOL_CONFIG": str(CONFIG)}
    with launched(env, tmp_path) as launch:
        launch.wait_settled()
        assert launch.finish() == 1, launch.output()
    assert launch.stderr == [
        "make run: TANDEM_RUN_OTELCOL_CONFIG is set without TANDEM_RUN_OTELCOL, the binary"
    ]


def test_make_run_refuses_an_unknown_collector_in_one_line() -> None:
    done = subprocess.run(
        ["make", "-s", "run", "COLLECTOR=bogus"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode != 0
    assert make_own_lines(done)[-1:] == [
        "make run: COLLECTOR=bogus: python (the default) or otelcol"
    ], done.stdout + done.stderr
