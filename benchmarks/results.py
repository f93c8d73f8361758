"""The results file: what `python -m benchmarks` measured, the statistics over its rounds, and
the report blocks each section writes from its own figures.

    {"format": 3,
     "run": {"command", "started", "seconds", "generator", "machine": {..., "packages"}},
     "sections": {"harness": {..., "report": {...}}, "overload": {...}, "micro": {...}}}

Each section (a module with SECTION, measure() and report(); benchmarks/__main__.py lists
them) writes its raw figures, every one with its round, its labels, targets and ratios, and
its part of the document: a "report" of blocks (below) and charts, made from those figures.
A section measured in another run than the rest (`make bench-overload`) carries a "run" of
its own. benchmarks.render lays the reports out; benchmarks.compare reads the raw figures.

A report is {"order": the section's number in the document, "body": [block, ...], "end":
[block, ...] (after every section's body), "charts": [chart, ...]}. A block is one of
{"heading": text}, {"text": markdown}, {"table": [header, row, ...]} with cells as strings,
or {"include": a file of benchmarks/}; a chart is described where benchmarks.render draws it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

FORMAT = 3
RESULTS = Path(__file__).with_name("results.json")
Block = dict[str, Any]


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


# --- Statistics over rounds ---------------------------------------------------------------


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


# --- Report blocks and how figures are shown in them ---------------------------------------


def heading(text: str) -> Block:
    return {"heading": text}


def text(*parts: str) -> Block:
    return {"text": "".join(parts)}


def table(header: list[str], rows: list[list[Any]]) -> Block:
    return {"table": [header, *([str(cell) for cell in row] for row in rows)]}


def shown(values: dict[str, float], fmt: str = "{:.0f}") -> str:
    """A spread as "median [min–max]"."""
    low, high = fmt.format(values["min"]), fmt.format(values["max"])
    return f"{fmt.format(values['median'])} [{low}–{high}]"


def shown_ratio(values: dict[str, float]) -> str:
    return shown(values, "{:.2f}")


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"
