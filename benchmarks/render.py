"""docs/benchmarks.md and its charts from a results file, and nothing else.

    python -m benchmarks.render [RESULTS] [--out DIR]     # make bench-report RESULTS=...

RESULTS (default benchmarks/results.json) is what `python -m benchmarks` wrote: the run, the
machine, and for each section its raw figures and its report (benchmarks.results says what a
report holds). This module lays the reports out, in the order of their sections' numbers, under
the run's header, and draws the charts they describe: a new section appears without a change
here. It imports no section (tests/bench holds it to that), and no section imports it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.results import RESULTS, Block, load, table

HERE = Path(__file__).parent


def markdown(results: dict[str, Any]) -> str:
    run, reports = results["run"], _reports(results)
    machine = run["machine"]
    charts = [chart["file"] for report in reports for chart in report.get("charts", ())]
    header: list[Block] = [
        {
            "text": f"Produced by `{run['command']}` on {machine['date']}, in "
            f"{run['seconds'] / 60:.1f} minutes. "
            + ("Charts: " if len(charts) > 1 else "The chart: " if charts else "")
            + ", ".join(f"[{name}]({name})" for name in charts)
            + "."
        },
        {"heading": "Machine"},
        table(
            ["", ""],
            [
                ["CPUs (`nproc`)", machine["nproc"]],
                ["CPU model (/proc/cpuinfo)", machine["cpu"]],
                ["Memory", f"{machine['memory_gib']} GiB"],
                ["Python", machine["python"]],
                ["Kernel", machine["kernel"]],
                ["Load generator", machine["loadgen"]],
                ["Packages", ", ".join(f"{k} {v}" for k, v in machine["packages"].items())],
                ["Command", f"`{run['command']}`"],
            ],
        ),
        {
            "text": "Everything ran on this one machine, on loopback: the load generator, the "
            "services, the collector. The machine is shared and noisy; hence several "
            "interleaved rounds, and every figure below is the **median [min–max]** over them."
        },
    ]
    if run["generator"] != "wrk":
        header.insert(1, {"text": _NOT_PUBLISHABLE})
    blocks = [
        *header,
        *(block for report in reports for block in report["body"]),
        *(block for report in reports for block in report.get("end", ())),
    ]
    return "\n".join(["# Benchmarks", "", *(line for b in blocks for line in _lines(b))])


_NOT_PUBLISHABLE = (
    "> **Not publishable**: this run used the Python stand-in load generator, not wrk."
)


def _reports(results: dict[str, Any]) -> list[dict[str, Any]]:
    found = [section["report"] for section in results["sections"].values()]
    return sorted(found, key=lambda report: report["order"])


def _lines(block: Block) -> list[str]:
    if "heading" in block:
        return [f"## {block['heading']}", ""]
    if "text" in block:
        return [block["text"], ""]
    if "include" in block:
        return [(HERE / block["include"]).read_text().rstrip(), ""]
    header, *rows = block["table"]
    return [_row(header), "|" + "---|" * len(header), *map(_row, rows), ""]


def _row(cells: list[str]) -> str:
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def draw(chart: dict[str, Any], path: Path) -> None:
    """A chart: {"title", "size": [inches], "grid": [rows, columns], "panels": [...]}; a panel
    has "series" (bars or lines), "hlines" and its axes' settings, all optional but the series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns = chart["grid"]
    fig, axes = plt.subplots(rows, columns, figsize=chart["size"], squeeze=False)
    fig.suptitle(chart["title"], fontsize=11)
    for ax, panel in zip((ax for row in axes for ax in row), chart["panels"], strict=True):
        for series in panel["series"]:
            (_bars if series["kind"] == "bars" else _line)(ax, series)
        for line in panel.get("hlines", ()):
            ax.axhline(
                line["y"],
                color=line["color"],
                linestyle=line.get("linestyle", "--"),
                linewidth=1,
                label=line.get("label"),
            )
        for axis in ("x", "y"):
            scale = panel.get(f"{axis}scale")
            if scale:
                base = {"base": 2} if scale == "log2" else {}
                getattr(ax, f"set_{axis}scale")("log", **base)
            if panel.get(f"{axis}label"):
                getattr(ax, f"set_{axis}label")(panel[f"{axis}label"])
        if "ylim" in panel:
            ax.set_ylim(*panel["ylim"])
        if "xticks" in panel:
            at, labels = panel["xticks"]
            ax.set_xticks(at, labels, fontsize=8)
        ax.set_title(panel["title"], fontsize=10)
        if panel.get("legend"):
            ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, chart.get("top", 0.95)))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax: Any, s: dict[str, Any]) -> None:
    """Bars at x, heights y, with error bars down to `low` and up to `high` if given, each
    annotated with its height (`annotate`: a format, or "auto")."""
    low, high = s.get("low"), s.get("high")
    yerr = None
    if low is not None and high is not None:
        yerr = [[y - lo for y, lo in zip(s["y"], low, strict=True)]]
        yerr.append([hi - y for y, hi in zip(s["y"], high, strict=True)])
    ax.bar(
        s["x"],
        s["y"],
        s.get("width", 0.8),
        yerr=yerr,
        capsize=4 if yerr else 0,
        color=s.get("color"),
        alpha=s.get("alpha", 1.0),
        label=s.get("label"),
    )
    fmt = s.get("annotate")
    if not fmt:
        return
    for x, y, top in zip(s["x"], s["y"], high or s["y"], strict=True):
        shown = ("{:.2f}" if y < 10 else "{:.0f}") if fmt == "auto" else fmt
        ax.annotate(
            shown.format(y), (x, top), textcoords="offset points", xytext=(0, 3), ha="center"
        )


def _line(ax: Any, s: dict[str, Any]) -> None:
    ax.plot(
        s["x"],
        s["y"],
        marker=s.get("marker", "o"),
        linestyle=s.get("linestyle", "-"),
        markersize=s.get("markersize", 6),
        color=s.get("color"),
        label=s.get("label"),
    )


def render(results: dict[str, Any], out: Path) -> None:
    """benchmarks.md and every chart the sections describe, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.md").write_text(markdown(results))
    for report in _reports(results):
        for chart in report.get("charts", ()):
            draw(chart, out / chart["file"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.render",
        description="docs/benchmarks.md and its charts from a results file (make bench-report).",
    )
    parser.add_argument("results", type=Path, nargs="?", default=RESULTS)
    parser.add_argument(
        "--out", type=Path, default=RESULTS.parent.parent / "docs", help="where they go"
    )
    args = parser.parse_args(argv)
    render(load(args.results), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
