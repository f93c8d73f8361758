"""`python -m benchmarks`: measure every section and write the results file (`make bench`).

    python -m benchmarks [--smoke] [--only SECTION]... [--results FILE] [--loadgen wrk|python|auto]
    python -m benchmarks --upgrade FILE    # an older results file, or its reports, rewritten

Each section is one module of this package with SECTION (its key in the results file),
measure(size, generator, logdir) -> its raw figures, and report(figures, results) -> its part
of the document (benchmarks.results says what that holds); SECTIONS lists them in the order
they run. With --only, the sections named replace theirs in an existing FILE and keep a record
of their own run; the others keep the figures of theirs. Every section's report is made again
from the figures in FILE, so that none is left citing another's older run. Nothing is drawn
here: benchmarks.render lays FILE out (`make bench` runs both).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import loadgen
from benchmarks.measuring import log, machine_info
from benchmarks.results import FORMAT, RESULTS, load, save

SECTIONS = ("harness", "overload", "micro")


def measure(args: argparse.Namespace, argv: list[str]) -> int:
    generator = loadgen.choose_generator(
        args.loadgen, os.environ.get("BENCH_COMMAND", "make bench")
    )
    size = "smoke" if args.smoke else "full"
    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    logdir.mkdir(parents=True, exist_ok=True)
    names = args.only or list(SECTIONS)
    log(f"size {size}, sections {', '.join(names)}, load generator {generator}, logs in {logdir}")
    run: dict[str, Any] = {
        "command": os.environ.get("BENCH_COMMAND")
        or " ".join([Path(sys.executable).name, "-m", "benchmarks", *argv]),
        "started": time.time(),
        "generator": generator,
        "machine": machine_info(generator),
    }
    began = time.monotonic()
    sections = {
        name: importlib.import_module(f"benchmarks.{name}").measure(size, generator, logdir)
        for name in names
    }
    run["seconds"] = time.monotonic() - began
    if args.only and args.results.exists():
        results = merge(load(args.results), sections, run)
    else:
        results = {"format": FORMAT, "run": run, "sections": sections}
    save(with_reports(results), args.results)
    log(f"done in {run['seconds']:.0f} s: {args.results}")
    return 0


def merge(results: dict[str, Any], sections: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """`results` with `sections`, measured in `run`, in place of theirs (`--only`)."""
    own = {name: {**section, "run": run} for name, section in sections.items()}
    return {**results, "sections": {**results["sections"], **own}}


def with_reports(results: dict[str, Any]) -> dict[str, Any]:
    """`results` with each section's report made from its figures by today's code."""
    for name, section in results["sections"].items():
        section["report"] = importlib.import_module(f"benchmarks.{name}").report(section, results)
    return results


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A results file of format 2 (figures without reports) or this one, with the reports made
    again from its figures by today's sections."""
    if data.get("format") not in (2, FORMAT):
        raise SystemExit(
            f"a results file of format {data.get('format', 1)}: render it with the revision of "
            "Tandem that wrote it (`--upgrade` reads formats 2 and 3)"
        )
    return with_reports({**data, "format": FORMAT})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Tandem's benchmarks (make bench)."
    )
    parser.add_argument("--smoke", action="store_true", help="seconds, for the test suite")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="measure this section only (repeatable)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file")
    parser.add_argument(
        "--loadgen",
        choices=("wrk", "python", "auto"),
        default="wrk",
        help="wrk (required for published figures), the aiohttp stand-in, or wrk if installed",
    )
    parser.add_argument("--logdir", type=Path, default=None, help="keep the processes' logs here")
    parser.add_argument(
        "--upgrade",
        type=Path,
        metavar="FILE",
        help="rewrite an older results file, or its reports with today's sections; measure nothing",
    )
    args = parser.parse_args(argv)
    if args.upgrade:
        save(upgrade(json.loads(args.upgrade.read_text())), args.upgrade)
        log(f"{args.upgrade}: format {FORMAT}, the reports made again from its figures")
        return 0
    return measure(args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
