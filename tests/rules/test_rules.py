"""The chart's Prometheus rules (charts/tandem/files/rules/), checked with the real promtool
(Debian's 2.42, as tests/prometheus.py's Prometheus): every file passes `promtool check
rules`; the unit tests beside this module (`promtool test rules`) pass, and between them
make every alert fire; every alert has its section in docs/alerts.md; the SLO alerts keep
the workbook's windows and rates, and one error budget per SLO."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus import debian_prometheus_tool

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "charts" / "tandem" / "files" / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yaml"))
UNIT_TESTS = sorted(Path(__file__).parent.glob("*.test.yaml"))
ALERTS_DOC = REPO / "docs" / "alerts.md"

# The SRE workbook's multi-window, multi-burn-rate table: long window -> (short window,
# burn rate, severity).
BURN_WINDOWS = {
    "1h": ("5m", "14.4", "page"),
    "6h": ("30m", "6", "page"),
    "1d": ("2h", "3", "ticket"),
    "3d": ("6h", "1", "ticket"),
}


@pytest.fixture(scope="session")
def promtool() -> Path:
    return debian_prometheus_tool("promtool")


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def alert_rules() -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule
        for path in RULE_FILES
        for group in load(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_there_are_rule_files_and_unit_tests_for_each() -> None:
    assert [p.name for p in RULE_FILES] == ["pipeline.yaml", "red.yaml", "slo.yaml"]
    tested = {Path(name).name for path in UNIT_TESTS for name in load(path)["rule_files"]}
    assert tested == {p.name for p in RULE_FILES}


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool: Path, rule_file: Path) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", rule_file],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests(promtool: Path, unit_test: Path) -> None:
    # The rule_files paths are relative to the test file: run from its directory.
    result = subprocess.run(
        [promtool, "test", "rules", unit_test.name],
        cwd=unit_test.parent,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_every_alert_fires_in_a_unit_test_and_stays_silent_in_another() -> None:
    fired, silent = set(), set()
    for path in UNIT_TESTS:
        for case in load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check["exp_alerts"] else silent).add(check["alertname"])
    assert set(alert_rules()) - fired == set()
    assert set(alert_rules()) - silent == set()


def test_every_alert_has_its_section_in_docs_alerts_md() -> None:
    headings = set(re.findall(r"^#+ .*?`?(Tandem\w+)`?\s*$", ALERTS_DOC.read_text(), re.M))
    assert set(alert_rules()) - headings == set()
    for name, rule in alert_rules().items():
        assert rule["annotations"]["runbook"] == f"docs/alerts.md#{name.lower()}"


def test_no_rule_names_an_integer_bucket_bound() -> None:
    """Prometheus 3 (the chart) stores le="1" as le="1.0", 2.42 (the tests) as le="1": a
    selector on an integer bound would match in one only."""
    exprs = [
        rule["expr"]
        for path in RULE_FILES
        for group in load(path)["groups"]
        for rule in group["rules"]
    ]
    assert len(exprs) == 41
    assert [e for e in exprs if re.search(r'le\s*=~?\s*"[0-9]+"', e)] == []


def test_slo_alerts_use_the_workbook_windows_and_one_budget_per_slo() -> None:
    """Each SLO alert: `<ratio over long> > (rate * budget) and <ratio over short> > (rate *
    budget)`, the same budget throughout its group, so a target changes in one place's worth
    of edits (docs/alerts.md, "Changing a target")."""
    budgets: dict[str, set[str]] = {}
    alert = re.compile(
        r"^(\w+:\w+:ratio_rate)(\w+) > \(([\d.]+) \* ([\d.]+)\)\nand\n"
        r"(\w+:\w+:ratio_rate)(\w+) > \(([\d.]+) \* ([\d.]+)\)\n$"
    )
    slo_alerts = [r for r in alert_rules().values() if "slo" in r["labels"]]
    assert len(slo_alerts) == 8
    for rule in slo_alerts:
        match = alert.match(rule["expr"])
        assert match, rule["expr"]
        record, long, rate, budget, record2, short, rate2, budget2 = match.groups()
        assert (record2, rate2, budget2) == (record, rate, budget)
        assert rule["alert"].endswith(f"Burn{long}")
        assert BURN_WINDOWS[long] == (short, rate, rule["labels"]["severity"])
        budgets.setdefault(rule["labels"]["slo"], set()).add(budget)
    assert budgets == {"gateway-availability": {"0.001"}, "gateway-latency": {"0.01"}}
