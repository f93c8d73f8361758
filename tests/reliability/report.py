"""The reliability report: each scenario records its load and figures; the session writes the table.

A test run writes it outside the tree, to .run/reliability.md, so `make test`
leaves `git status` clean. `make reliability-report` runs the suite with
TANDEM_RELIABILITY_REPORT pointing at the tracked docs/reliability.md.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, fields
from pathlib import Path

REPO = Path(__file__).parents[2]
DEFAULT_REPORT = REPO / ".run" / "reliability.md"


@dataclass
class Row:
    scenario: str
    load: str
    requests: int
    failures: int
    spans_expected: int | None = None
    spans_received: int | None = None
    p99_ratio: float | None = None
    rss_mb_before: float | None = None
    rss_mb_after: float | None = None
    notes: str = ""


_rows: dict[str, Row] = {}


def record(row: Row) -> None:
    """Keep a scenario's figures for the report (the last run of a scenario wins)."""
    _rows[row.scenario] = row
    print(f"reliability report: {row}")


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def write(expected_scenarios: int) -> Path | None:
    """Write the report when every scenario ran in this session; a partial run leaves it alone."""
    report = Path(os.environ.get("TANDEM_RELIABILITY_REPORT") or DEFAULT_REPORT)
    if len(_rows) < expected_scenarios:
        return None
    names = [f.name for f in fields(Row)]
    lines = [
        "# Reliability report",
        "",
        "Written by the fault-injection suite (`tests/reliability`) on its last full run by",
        "`make reliability-report` (`make test` writes the same table to `.run/reliability.md`).",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()}.",
        "Every request here is on loopback; no figure is a test assertion except the failure "
        "counts and span counts.",
        "",
        "| " + " | ".join(n.replace("_", " ") for n in names) + " |",
        "|" + "---|" * len(names),
    ]
    for row in sorted(_rows.values(), key=lambda r: r.scenario):
        lines.append("| " + " | ".join(_cell(getattr(row, n)) for n in names) + " |")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    return report
