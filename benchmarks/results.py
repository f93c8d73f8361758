"""The results file: what `python -m benchmarks` measured, and the statistics over its rounds.

    {"format": 2,
     "run": {"command", "started", "seconds", "generator", "machine": {..., "packages"}},
     "sections": {"harness": {...}, "overload": {...}, "micro": {...}}}

Each section (a module with SECTION and measure(); benchmarks/__main__.py lists them) writes
its raw figures, every one with its round, and its labels, targets and ratios. A section
measured in another run than the rest (`make bench-overload`) carries a "run" of its own.
benchmarks.render and benchmarks.compare read this file and nothing the sections define.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

FORMAT = 2
RESULTS = Path(__file__).with_name("results.json")


def save(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise SystemExit(
            f"{path}: a results file of format {data.get('format', 1)}, not {FORMAT}; "
            f"`python -m benchmarks --upgrade {path}` rewrites it in this one"
        )
    return data


def section_run(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The run that measured section `name`: its own, or the file's."""
    run: dict[str, Any] = data["sections"][name].get("run", data["run"])
    return run


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "min": 0.0, "max": 0.0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def paired_ratios(
    rows: list[dict[str, Any]], key: str, variant: str, baseline: str, value: str = "rps"
) -> list[float]:
    """`variant`'s `value` over `baseline`'s, one ratio per round that measured both."""
    by_round: dict[int, dict[str, float]] = {}
    for row in rows:
        by_round.setdefault(row["round"], {})[row[key]] = row[value]
    return [v[variant] / v[baseline] for v in by_round.values() if variant in v and v.get(baseline)]


def ratios(section: dict[str, Any]) -> dict[str, list[float]]:
    """Every ratio a section declares ("ratios"), per round, named like "full: traced /
    disabled" or "hop, worker: tandem / aiohttp"."""
    found: dict[str, list[float]] = {}
    for ratio in section.get("ratios", []):
        rows, by, to, within = ratio["rows"], ratio["by"], ratio["to"], ratio.get("within")
        groups = dict.fromkeys(row[within] for row in section[rows]) if within else {None: None}
        for group in groups:
            mine = [row for row in section[rows] if within is None or row[within] == group]
            for name in dict.fromkeys(row[by] for row in mine):
                values = paired_ratios(mine, by, name, to, ratio["value"]) if name != to else []
                if values:
                    where = f"{rows}, {group}" if within else rows
                    found[f"{where}: {name} / {to}"] = values
    return found
