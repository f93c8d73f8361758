"""`python -m benchmarks`: measure every section and write the results file (`make bench`).

    python -m benchmarks [--smoke] [--only SECTION]... [--results FILE] [--loadgen wrk|python|auto]
    python -m benchmarks --upgrade FILE    # a results file from before format 2, rewritten

Each section is one module of this package with SECTION (its key in the results file) and
measure(size, generator, logdir) -> its raw figures; SECTIONS lists them in the order they run.
With --only, the sections named replace theirs in an existing FILE and keep a record of their
own run; the others keep the figures of theirs. Nothing is rendered here: benchmarks.render
reads FILE (`make bench` runs both).
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
    save(results, args.results)
    log(f"done in {run['seconds']:.0f} s: {args.results}")
    return 0


def merge(results: dict[str, Any], sections: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """`results` with `sections`, measured in `run`, in place of theirs (`--only`)."""
    own = {name: {**section, "run": run} for name, section in sections.items()}
    return {**results, "sections": {**results["sections"], **own}}


def upgrade(old: dict[str, Any]) -> dict[str, Any]:
    """A results file of `make bench` before format 2 (one dict, the run's keys at its top, the
    overload and micro sections under theirs, summaries included) in format 2. The labels,
    targets and ratios it lacks are today's; what the old run did not record stays out (e.g.
    service_env: its sections 1-5 ran before the admission limit existed)."""
    from benchmarks import harness, overload

    old = {key: value for key, value in old.items() if key != "summary"}
    run = {key: old.pop(key) for key in ("command", "started", "generator", "machine", "seconds")}
    sections: dict[str, Any] = {
        "harness": {
            **{key: value for key, value in old.items() if key not in ("overload", "micro")},
            "spans_per_request": 1 + 6 * old["tasks"],
            "labels": harness.LABELS,
            "targets": harness.TARGETS,
            "tutorial_rps": harness.TUTORIAL_RPS,
            "ratios": harness.RATIOS,
        }
    }
    if old.get("overload"):
        section = {k: v for k, v in old["overload"].items() if k not in ("summary", "standalone")}
        own = {key: section.pop(key) for key in ("command", "generator", "machine")}
        if old["overload"].get("standalone"):
            section["run"] = {"started": None, "seconds": section["seconds"], **own}
        section.update(
            plateau=overload.PLATEAU,
            probe_timeout_seconds=overload.PROBE_TIMEOUT_SECONDS,
            ratios=overload.RATIOS,
        )
        sections["overload"] = section
    if old.get("micro"):
        sections["micro"] = {"cases": old["micro"]}
    return {"format": FORMAT, "run": run, "sections": sections}


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
        help="rewrite an older results file; measure nothing",
    )
    args = parser.parse_args(argv)
    if args.upgrade:
        save(upgrade(json.loads(args.upgrade.read_text())), args.upgrade)
        return 0
    return measure(args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
