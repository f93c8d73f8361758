"""The benchmark harness (`make bench`) at smoke size, so that it cannot rot.

One run of `python -m benchmarks --smoke`, in seconds, then `python -m
benchmarks.render` on its results file, as `make bench` runs them: every
section runs, on its baseline and Tandem's own variant (the smoke size lists
them; `make bench` measures every variant), counts requests and spans, and
ends up in the table and the chart. Nothing here asserts a timing or a ratio; the figures of
a smoke run on a busy test machine mean nothing. wrk is used where it is
installed, else the harness's Python stand-in, so that the test never skips.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import merge, with_reports
from benchmarks.harness import (
    FULL_VARIANTS,
    HOP_CLIENTS,
    HOP_SERVERS,
    SIZES,
    SPANS_PER_REQUEST,
    TRIVIAL_VARIANTS,
)
from benchmarks.micro import CASES
from benchmarks.micro import SIZES as MICRO_SIZES
from benchmarks.overload import CHART as OVERLOAD_CHART
from benchmarks.overload import CONFIGS, summarize
from benchmarks.render import render
from benchmarks.results import RESULTS, load

REPO = Path(__file__).resolve().parents[2]
SMOKE = SIZES["smoke"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("bench")
    out, raw = root / "docs", root / "results.json"
    measure = [
        *(sys.executable, "-m", "benchmarks", "--smoke", "--loadgen", "auto"),
        *("--results", str(raw), "--logdir", str(root / "logs")),
    ]
    report = [sys.executable, "-m", "benchmarks.render", str(raw), "--out", str(out)]
    for command in (measure, report):
        done = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False
        )
        assert done.returncode == 0, f"{command[2]} failed:\n{done.stderr[-6000:]}"
    results = json.loads(raw.read_text())
    # The figures of sections 1-5 at the top, as the assertions below read them.
    data = {
        **results["sections"]["harness"],
        **results["run"],
        "overload": results["sections"]["overload"],
        "micro": {row["name"]: row["us"] for row in results["sections"]["micro"]["cases"]},
    }
    return data, out


def _measured(rows: list[dict], **match: str) -> list[dict]:
    return [row for row in rows if all(row[k] == v for k, v in match.items())]


def test_make_bench_measures_every_variant_and_the_smoke_run_each_section() -> None:
    full = SIZES["full"]
    assert full.trivial_variants == tuple(TRIVIAL_VARIANTS)
    assert full.full_variants == tuple(FULL_VARIANTS)
    assert (full.hop_servers, full.hop_clients) == (tuple(HOP_SERVERS), tuple(HOP_CLIENTS))
    assert MICRO_SIZES["full"][:2] == (CASES, False)
    # The report's targets need these; each is a baseline or Tandem's own variant.
    assert {"untraced", "tandem"} <= set(SMOKE.trivial_variants)
    assert {"traced", "disabled"} <= set(SMOKE.full_variants)
    assert "worker" in SMOKE.hop_servers and {"tandem", "aiohttp"} <= set(SMOKE.hop_clients)


def test_every_trivial_route_variant_served_requests(smoke):
    data, _ = smoke
    assert {row["variant"] for row in data["trivial"]} == set(SMOKE.trivial_variants)
    for variant in SMOKE.trivial_variants:
        rows = _measured(data["trivial"], variant=variant)
        assert rows, variant
        assert all(row["requests"] > 0 and row["errors"] == 0 for row in rows), rows


def test_every_full_path_variant_served_requests(smoke):
    data, _ = smoke
    assert {row["variant"] for row in data["full"]} == set(SMOKE.full_variants)
    for variant in SMOKE.full_variants:
        rows = _measured(data["full"], variant=variant)
        assert rows, variant
        assert all(row["requests"] > 0 and row["errors"] == 0 for row in rows), rows
        assert all(row["p99_ms"] >= row["p50_ms"] > 0 for row in rows), rows


def test_every_hop_client_ran_against_every_server(smoke):
    data, _ = smoke
    for server in SMOKE.hop_servers:
        for client in SMOKE.hop_clients:
            rows = _measured(data["hop"], server=server, client=client)
            assert rows, (server, client)
            assert all(row["requests"] > 0 and row["errors"] == 0 for row in rows), rows


def test_span_delivery_and_memory_were_measured(smoke):
    data, _ = smoke
    delivery = data["delivery"]
    assert delivery["served"] > 0
    assert delivery["spans_expected"] == delivery["served"] * SPANS_PER_REQUEST
    assert delivery["spans_received"] > 0
    assert set(delivery["bsp_settings"]) == {
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "OTEL_BSP_SCHEDULE_DELAY",
    }
    for stage in ("before", "end_of_run", "settled"):
        assert delivery["rss_kib"][stage]["gateway"] > 0
        assert delivery["rss_kib"][stage]["worker"] > 0


def test_the_overload_section_swept_and_overloaded_both_configurations(smoke):
    data, _ = smoke
    overload = data["overload"]
    sizes = {(row["config"], row["connections"]) for row in overload["sweep"]}
    assert {config for config, _ in sizes} == set(CONFIGS)
    assert all(row["ok"]["count"] > 0 for row in overload["sweep"]), overload["sweep"]
    capacity = overload["capacity"]
    assert capacity["goodput"] > 0 and capacity["connections"] in overload["size"]["sweep"]
    summary = summarize(overload)
    for config in CONFIGS:
        for multiple in overload["size"]["multiples"]:
            entry = summary[f"{config}-{multiple}x"]
            assert entry["connections"] == multiple * capacity["connections"]
            assert entry["rounds"] == overload["size"]["rounds"]
            assert entry["readyz"]["probes"] >= entry["readyz"]["failures"] >= 0
            assert entry["cpu"]["machine"] > 0
            assert entry["spans"]["expected"] > 0, entry
            assert entry["spans"]["received"] > 0, entry
            assert entry["rss_peak_mib"]["gateway"] > 0 and entry["rss_peak_mib"]["worker"] > 0
    # With the limit off, nothing is ever shed.
    assert all(row["shed"]["count"] == 0 for row in overload["overload"] if row["config"] == "off")


def test_the_micro_benchmarks_ran(smoke):
    data, _ = smoke
    # One name per server and client case; the sdk and export cases measure four each.
    expected = {
        "server-untraced",
        "server-disabled-caller",
        "server-traced",
        "client-traced",
        "sdk span",
        "request span",
        "sdk histogram",
        "duration histogram",
        "sdk encoder, server span",
        "tandem encoder, server span",
        "sdk encoder, client span",
        "tandem encoder, client span",
    }
    assert set(data["micro"]) == expected
    assert all(value > 0 for value in data["micro"].values())


def test_the_table_and_the_chart_were_written(smoke):
    data, out = smoke
    markdown = (out / "benchmarks.md").read_text()
    for heading in (
        "## Machine",
        "## Against the targets",
        "## 1.",
        "## 2.",
        "## 3.",
        "## 4.",
        "## 5.",
        "## 6.",
        "## 7. Overload",
    ):
        assert heading in markdown, heading
    assert markdown.count("## 7. Overload") == 1
    assert f"`{data['command']}`" in markdown
    assert f"| CPUs (`nproc`) | {data['machine']['nproc']} |" in markdown
    for chart in ("benchmarks.png", OVERLOAD_CHART):
        assert (out / chart).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), chart


def test_bench_overload_replaces_its_section_and_nothing_else(smoke, tmp_path):
    """`make bench-overload` replaces the section in the saved results; rendered, the report
    changes in section 7 only."""
    data, _ = smoke
    saved = load(RESULTS)
    run = {key: data[key] for key in ("command", "started", "seconds", "generator", "machine")}
    overload = {k: v for k, v in data["overload"].items() if k != "report"}
    render(with_reports(merge(saved, {"overload": overload}, run)), tmp_path)
    published = (REPO / "docs" / "benchmarks.md").read_text()
    once = (tmp_path / "benchmarks.md").read_text()
    assert once.count("## 7. Overload") == 1

    def outside(text: str) -> str:
        head, _, rest = text.partition("## 7. Overload")
        return head + rest[rest.index("## How it was measured") :]

    # Everything outside the section is the published text, byte for byte.
    assert outside(once) == outside(published)
    assert once != published
    assert f"Produced by `{data['command']}`" in once and "apart from the other sections" in once
