"""Before/after for the hot-path optimisations: the same measurements against two versions of
tandem_telemetry.

    python -m benchmarks.ab [--rev REV] [--files client.py,middleware.py,propagation.py]
                            [--rounds 4]

"before" is the working tree's tandem_telemetry with FILES taken from git
revision REV (default HEAD), copied to a temporary directory that goes first
on PYTHONPATH; "after" is the working tree as it is. Both run side by side,
interleaved round by round like `make bench`: the full path (traced and
OTEL_SDK_DISABLED), the trivial route with Tandem's middleware, and the hop
(Tandem's client, traced and untraced, against the raw-socket server).
Prints a table of medians [min-max] and after/before ratios. A middleware.py
from before the gateway's internal listener (no trust_incoming_context) cannot
serve today's gateway.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks import harness, loadgen, measuring
from tandem_collector.ports import free_ports

PACKAGE = measuring.REPO / "services" / "tandem_telemetry" / "src" / "tandem_telemetry"


def before_package(rev: str, files: list[str]) -> Path:
    root = Path(tempfile.mkdtemp(prefix="tandem-before-"))
    target = root / "tandem_telemetry"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    for name in files:
        path = f"services/tandem_telemetry/src/tandem_telemetry/{name}"
        text = subprocess.run(
            ["git", "show", f"{rev}:{path}"],
            cwd=measuring.REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (target / name).write_text(text)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab")
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--files", default="client.py,middleware.py,propagation.py")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=6)
    args = parser.parse_args(argv)

    before = before_package(args.rev, args.files.split(","))
    size = harness.SIZES["full"]
    procs = measuring.Processes(Path(tempfile.mkdtemp(prefix="tandem-ab-")), size.telemetry_env())
    paths = {
        "before": f"{before}{os.pathsep}{measuring.pythonpath()}",
        "after": measuring.pythonpath(),
    }
    rows: dict[tuple[str, str], list[float]] = {}
    try:
        collector = procs.collector()
        urls: dict[tuple[str, str], str] = {}
        for version, pythonpath in paths.items():
            for variant in ("traced", "disabled"):
                extra = {
                    # Like sections 1-5: the traced path, not the admission limit's shedding.
                    **harness.NO_ADMISSION_LIMIT,
                    "PYTHONPATH": pythonpath,
                    **({"OTEL_SDK_DISABLED": "true"} if variant == "disabled" else {}),
                }
                _, _, gateway_port = procs.pair(f"{version}-{variant}", collector, extra)
                urls[(version, f"full path, {variant}")] = (
                    f"http://127.0.0.1:{gateway_port}/api/work?tasks={harness.TASKS}"
                )
            port = free_ports(1)[0]
            procs.service(
                f"trivial-{version}",
                "benchmarks.serve",
                port,
                collector,
                {"BENCH_APP": "benchmarks.apps:tandem", "PYTHONPATH": pythonpath},
            )
            urls[(version, "trivial route, Tandem's middleware")] = f"http://127.0.0.1:{port}/hello"
        raw_port = free_ports(1)[0]
        raw = procs.stack.start(
            "hop-raw",
            "benchmarks.hop",
            {"PYTHONPATH": measuring.pythonpath()},
            ("server", "--port", str(raw_port)),
        )
        procs.expect_ready(raw, f"http://127.0.0.1:{raw_port}/readyz")
        procs.wait_ready()
        for url in urls.values():
            loadgen.run_wrk(url, 2, threads=1, connections=32)
        for r in range(args.rounds):
            for version in measuring.rotated(list(paths), r):
                for (v, what), url in urls.items():
                    if v == version:
                        connections = 32
                        rows.setdefault((version, what), []).append(
                            loadgen.run_wrk(
                                url, args.seconds, threads=1, connections=connections
                            ).rps
                        )
                        time.sleep(0.5)
                for kind in ("tandem", "tandem_untraced"):
                    env_path = os.environ.get("PYTHONPATH")
                    os.environ["PYTHONPATH"] = paths[version]
                    try:
                        hop_size = harness.Size("ab", 1, 0, 0, args.seconds, 1.0, 0, 0, 0, 0)
                        result = harness.hop_client(
                            kind, f"http://127.0.0.1:{raw_port}", collector, hop_size, 32
                        )
                    finally:
                        if env_path is None:
                            os.environ.pop("PYTHONPATH", None)
                        else:
                            os.environ["PYTHONPATH"] = env_path
                    label = "hop (raw server), Tandem's client " + (
                        "traced" if kind == "tandem" else "untraced"
                    )
                    rows.setdefault((version, label), []).append(result["rps"])
            measuring.log(f"round {r + 1}/{args.rounds} done")
    finally:
        procs.stop_all()
        shutil.rmtree(before, ignore_errors=True)
    print(
        f"| req/s, median [min–max] over {args.rounds} rounds "
        f"| before ({args.rev}: {args.files}) | after (working tree) | after / before |"
    )
    print("|---|---|---|---|")
    for what in dict.fromkeys(w for _, w in rows):
        b, a = rows[("before", what)], rows[("after", what)]
        fmt = lambda xs: f"{statistics.median(xs):.0f} [{min(xs):.0f}–{max(xs):.0f}]"  # noqa: E731
        print(
            f"| {what} | {fmt(b)} | {fmt(a)} | {statistics.median(a) / statistics.median(b):.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
