"""A fault drives the availability SLO's fast-burn alert for real: the services → the real
Collector (the chart's configuration) → Prometheus 2.42 evaluating the chart's SLO rules.

What is proven, and what is not: Prometheus evaluates a variant of
charts/tandem/files/rules/slo.yaml whose range windows are each divided by 60 (5m → 5s,
1h → 60s, 3d → 4320s) and nothing else changed (the same names, selectors, burn rates and
budgets), because a 1-hour window cannot be waited for in a test. So this proves the
expressions and the alert, on the real metric names and labels the services and the
Collector produce, with real `fail=worker` 502s: a healthy run leaves it inactive and a 10%
failure rate (a 100x burn of the 0.001 budget) fires TandemGatewayAvailabilityBurn1h. The
windows' lengths themselves are proven by promtool's unit tests (tests/rules/).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem_localstack import Collector, OtelcolPorts, Pair, Stack, free_collector_ports
from tests.prometheus import Prometheus, PrometheusError, collector_scrape_configs, start_prometheus
from tests.rules.test_rules import RULES_DIR

SLO_RULES = RULES_DIR / "slo.yaml"
ALERT = "TandemGatewayAvailabilityBurn1h"
GROUP = "tandem-slo-gateway-availability"
LONG = "gateway_api_work:slo_errors:ratio_rate1h"
SHORT = "gateway_api_work:slo_errors:ratio_rate5m"
BUDGET = 0.001
FAST_BURN = 14.4
# One request in FAIL_EVERY asks the worker to fail: 10%, a 100x burn.
FAIL_EVERY = 10
# Rule evaluations watched with healthy traffic flowing and both ratios recorded.
HEALTHY_EVALUATIONS = 15
# Bounds on the waits (events, not durations): generous, for a machine with both cores busy.
WAIT = 120.0
UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}


def shortened(rules: str) -> tuple[str, int]:
    """`rules` with every range window divided by 60; how many windows there were."""

    def divide(match: re.Match[str]) -> str:
        seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
        assert seconds % 60 == 0, match.group(0)
        return f"[{seconds // 60}s]"

    return re.subn(r"\[(\d+)([mhd])\]", divide, rules)


class Traffic:
    """GET /api/work in a loop on a thread; `failing` makes one in FAIL_EVERY use fail=worker."""

    def __init__(self, gateway_url: str) -> None:
        self.failing = False
        self.sent: dict[int, int] = {}
        self.error: httpx.HTTPError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(gateway_url,), daemon=True)
        self._thread.start()

    def _run(self, gateway_url: str) -> None:
        try:
            with httpx.Client(base_url=gateway_url, timeout=30) as gateway:
                n = 0
                while not self._stop.is_set():
                    n += 1
                    params: dict[str, Any] = {"tasks": 1}
                    if self.failing and n % FAIL_EVERY == 0:
                        params["fail"] = "worker"
                    status = gateway.get("/api/work", params=params).status_code
                    self.sent[status] = self.sent.get(status, 0) + 1
        except httpx.HTTPError as error:  # surfaced by check(), in the test's thread
            self.error = error

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the traffic thread failed: {self.error!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.fixture(scope="module")
def prom_and_pair(
    stack: Stack,
    otelcol: Path,
    chart_config: Path,
    prometheus_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Prometheus, Pair]:
    ports = OtelcolPorts.free()
    store = stack.start_collector(free_collector_ports(), name="store")
    collector: Collector = stack.start_otelcol(otelcol, chart_config, store, ports)
    workdir = tmp_path_factory.mktemp("prometheus")
    text, windows = shortened(SLO_RULES.read_text())
    assert windows == 28  # 7 ratios for each of the two SLOs, two ranges each
    variant = workdir / "slo-shortened.yaml"
    variant.write_text(text)
    prom = start_prometheus(
        stack, workdir, collector_scrape_configs(ports), binary=prometheus_bin, rule_files=[variant]
    )
    prom.wait_for_targets()
    return prom, stack.start_pair(collector)


def alert_rule(prom: Prometheus) -> dict[str, Any]:
    (group,) = [g for g in prom.rules() if g["name"] == GROUP]
    (rule,) = [r for r in group["rules"] if r.get("name") == ALERT]
    assert rule["health"] == "ok", rule
    return rule


def test_a_healthy_run_stays_silent_and_failing_requests_fire_the_fast_burn_alert(
    prom_and_pair: tuple[Prometheus, Pair],
) -> None:
    prom, pair = prom_and_pair
    traffic = Traffic(pair.gateway_url)
    try:
        # Healthy: once both windows have requests in them, the ratios are 0 and the alert
        # inactive at each of HEALTHY_EVALUATIONS evaluations.
        prom.wait_until(
            f"{LONG} >= 0 and {SHORT} >= 0",
            lambda samples: len(samples) == 1,
            timeout=WAIT,
            what="both availability ratios recorded",
        )
        seen: set[str] = set()
        deadline = time.monotonic() + WAIT
        while len(seen) < HEALTHY_EVALUATIONS:
            assert time.monotonic() < deadline, f"{len(seen)} evaluations in {WAIT} s"
            traffic.check()
            rule = alert_rule(prom)
            assert rule["state"] == "inactive", rule
            # No error ratio above 0 in either window (a window a stall left without requests
            # has no ratio, which is no error either).
            assert prom.query(f"({LONG}) > 0 or ({SHORT}) > 0") == []
            seen.add(rule["lastEvaluation"])
            prom.check_running()
            time.sleep(0.2)
        assert [a for a in prom.alerts() if a["labels"]["alertname"] == ALERT] == []

        # The fault: one request in FAIL_EVERY answered 502.
        traffic.failing = True
        try:
            firing = prom.wait_until(
                f'ALERTS{{alertname="{ALERT}",alertstate="firing"}}',
                lambda samples: len(samples) == 1,
                timeout=WAIT,
                what=f"{ALERT} firing",
            )
        except PrometheusError as error:
            raise AssertionError(
                f"{error}; {LONG}={prom.value(LONG)} {SHORT}={prom.value(SHORT)}"
                f" sent={traffic.sent}"
            ) from error
        traffic.check()
        assert firing[0][0]["severity"] == "page"
        long, short = prom.value(LONG), prom.value(SHORT)
        assert long is not None and short is not None
        # The burn rates the alert saw (recorded at the same or a later evaluation).
        print(f"burn rate: {long / BUDGET:.1f}x over the long window, {short / BUDGET:.1f}x short")
        assert long > FAST_BURN * BUDGET and short > FAST_BURN * BUDGET
        assert traffic.sent.get(502, 0) > 0 and set(traffic.sent) <= {200, 502}
        # As the long window fills with the fault, its burn rate nears the set 100x.
        settled = prom.wait_until(
            f"{LONG} > {0.5 / FAIL_EVERY}", lambda samples: len(samples) == 1, timeout=WAIT
        )
        print(f"burn rate, long window full of the fault: {settled[0][1] / BUDGET:.1f}x")
    finally:
        traffic.stop()
