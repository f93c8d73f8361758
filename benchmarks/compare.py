"""`make bench-compare A=... B=...`: two saved runs side by side, ratio by ratio.

    python -m benchmarks.compare A.json B.json

Each ratio a section declares (benchmarks.results.ratios: a variant over its baseline, within
each round) is printed as median [min–max] over the rounds of A and of B, with B's median over
A's. A difference is beyond the noise when the two runs' ranges do not overlap: every round of
B above every round of A, or below. Were both runs drawn from the same spread, that would happen
by chance 2 times in C(2n, n) with n rounds each: 1 in 126 with make bench's 5 rounds, 1 in 3
with the overload section's 2 (a hint there, no more). A ratio with a single round in either
run has no spread to judge by, and is not judged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.results import load, ratios, spread

BEYOND = "beyond the noise"


def judge(a: list[float], b: list[float]) -> str:
    if len(a) < 2 or len(b) < 2:
        return "one round: not judged"
    if min(b) > max(a):
        return f"{BEYOND}: higher"
    if max(b) < min(a):
        return f"{BEYOND}: lower"
    return "within the noise"


def _shown(values: list[float] | None) -> str:
    if not values:
        return "–"
    s = spread(values)
    return f"{s['median']:.2f} [{s['min']:.2f}–{s['max']:.2f}]"


def compare(a_path: Path, b_path: Path) -> list[str]:
    a, b = load(a_path), load(b_path)
    lines = []
    for name, path, data in (("A", a_path, a), ("B", b_path, b)):
        run = data["run"]
        lines.append(f"{name}: {path} (`{run['command']}`, {run['machine']['date']})")
    rows = [("Ratio, per round", "A, median [min–max]", "B, median [min–max]", "B / A", "")]
    moved = judged = 0
    for section in dict.fromkeys([*a["sections"], *b["sections"]]):
        in_a = ratios(a["sections"].get(section, {}))
        in_b = ratios(b["sections"].get(section, {}))
        for ratio in dict.fromkeys([*in_a, *in_b]):
            mine, theirs = in_a.get(ratio), in_b.get(ratio)
            change, verdict = "–", "in one run only"
            if mine and theirs:
                change = f"{spread(theirs)['median'] / spread(mine)['median']:.2f}"
                verdict = judge(mine, theirs)
                judged += verdict != "one round: not judged"
                moved += verdict.startswith(BEYOND)
            named = ratio if ratio.startswith(section) else f"{section}, {ratio}"
            rows.append((named, _shown(mine), _shown(theirs), change, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines.append("")
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    machines = {data["run"]["machine"]["cpu"] for data in (a, b)}
    lines.append("")
    lines.append(f"{moved} of {judged} ratios moved beyond the noise of their own rounds.")
    if len(machines) > 1:
        lines.append(f"The runs are of different machines ({' and '.join(sorted(machines))}).")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("a", type=Path, help="the earlier results file")
    parser.add_argument("b", type=Path, help="the later results file")
    args = parser.parse_args(argv)
    print("\n".join(compare(args.a, args.b)), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
