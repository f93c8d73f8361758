"""`make bench-compare`: two saved runs, ratio by ratio, and which moved beyond their noise."""

from __future__ import annotations

import copy
from pathlib import Path

from benchmarks.compare import compare
from benchmarks.results import RESULTS, load, save
from tests.bench.test_results import reached_from


def test_compare_reads_the_results_file_and_no_section() -> None:
    assert reached_from("compare") == {"results"}


def test_bench_compare_flags_the_ratio_that_moved_and_no_other(tmp_path: Path) -> None:
    later = copy.deepcopy(load(RESULTS))
    for row in later["sections"]["harness"]["trivial"]:
        if row["variant"] == "tandem":
            row["rps"] *= 0.8  # every round: beyond any spread the saved run's rounds show
    save(later, tmp_path / "later.json")
    lines = compare(RESULTS, tmp_path / "later.json")
    flagged = [line for line in lines if "beyond the noise:" in line]
    assert len(flagged) == 1, flagged
    assert flagged[0].startswith("harness, trivial: tandem / untraced"), flagged
    assert "lower" in flagged[0]
    judged = [line for line in lines if "within the noise" in line]
    assert len(judged) > 20, lines
    assert lines[-1] == f"1 of {len(judged) + 1} ratios moved beyond the noise of their own rounds."


def test_the_same_run_twice_is_all_within_the_noise() -> None:
    lines = compare(RESULTS, RESULTS)
    assert not [line for line in lines if "beyond the noise:" in line]
    assert lines[-1].startswith("0 of ")
