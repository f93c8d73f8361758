"""docs/benchmarks.md and its charts from a results file, and nothing else.

    python -m benchmarks.render [RESULTS] [--out DIR]     # make bench-report RESULTS=...

RESULTS (default benchmarks/results.json) is what `python -m benchmarks` wrote: each section's
raw figures with their rounds, labels, targets and the machine. Medians, spreads and ratios are
taken here, from those rows, so that a saved run can be rendered again, byte for byte. This
module imports no section (tests/bench holds it to that), and no section imports it.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.results import RESULTS, load, paired_ratios, spread

NOTES = Path(__file__).with_name("NOTES.md")


# Chart labels and colours, keyed like the harness section's labels.
TRIVIAL_SHORT = {
    "untraced": "(a) untraced",
    "tandem": "(b) Tandem",
    "tandem_public": "(b′) Tandem,\npublic path",
    "contrib": "(c) contrib",
    "starlette": "(d) Starlette",
    "floor_sdk": "(e) bare SDK span",
    "floor_tandem": "(f) bare span,\nRequestTracer",
}
TRIVIAL_COLORS = {
    "untraced": "#999999",
    "tandem": "#2a7ab9",
    "tandem_public": "#6baed6",
    "contrib": "#d98c2b",
    "starlette": "#8c6bb1",
    "floor_sdk": "#cccccc",
    "floor_tandem": "#a9c9e4",
}
HOP_SHORT = {
    "tandem": "Tandem, traced",
    "tandem_public": "Tandem, traced,\npublic path",
    "tandem_untraced": "Tandem, SDK off",
    "aiohttp": "raw aiohttp",
    "httpx": "httpx default",
    "aiohttp_span": "aiohttp +\nbare SDK span",
    "tandem_bare_span": "Tandem, SDK off\n+ bare SDK span",
}
HOP_COLORS = {
    "tandem": "#2a7ab9",
    "tandem_public": "#6baed6",
    "tandem_untraced": "#7fb3dd",
    "aiohttp": "#999999",
    "httpx": "#d98c2b",
    "aiohttp_span": "#cccccc",
    "tandem_bare_span": "#c6dbef",
}


def _s(spread: dict[str, float], fmt: str = "{:.0f}") -> str:
    return (
        f"{fmt.format(spread['median'])} [{fmt.format(spread['min'])}–{fmt.format(spread['max'])}]"
    )


def _r(spread: dict[str, float]) -> str:
    return _s(spread, "{:.2f}")


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def target_rows(data: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(measure, target, measured, met) for each performance target; met judged on the median."""
    s = data["summary"]
    targets, tutorial_rps = data["targets"], data["tutorial_rps"]
    trivial = s["trivial"]["tandem"]["ratio"]
    traced = s["full"]["traced"]
    hop = s["hop"]["worker"]["tandem"]["ratio"]
    tutorial = {k: v / tutorial_rps for k, v in traced["rps"].items()}
    delivery = data["delivery"]["ratio"]
    return [
        (
            "Trivial route: (b) Tandem / (a) untraced",
            f"≥ {targets['trivial']:.2f}",
            _r(trivial),
            trivial["median"] >= targets["trivial"],
        ),
        (
            "Full path: traced / OTEL_SDK_DISABLED",
            f"≥ {targets['full_vs_disabled']:.2f}",
            _r(traced["ratio_to_disabled"]),
            traced["ratio_to_disabled"]["median"] >= targets["full_vs_disabled"],
        ),
        (
            "Full path: traced / contrib-instrumented",
            f"≥ {targets['full_vs_contrib']:.1f}",
            _r(traced["ratio_to_contrib"]),
            traced["ratio_to_contrib"]["median"] >= targets["full_vs_contrib"],
        ),
        (
            f"Full path: traced req/s / {tutorial_rps:.0f} "
            "(tutorial-style setup, measured earlier)",
            f"≥ {targets['full_vs_tutorial']:.1f}",
            _r(tutorial),
            tutorial["median"] >= targets["full_vs_tutorial"],
        ),
        (
            "Hop: Tandem's client / raw aiohttp (worker stand-in)",
            f"≥ {targets['hop']:.2f}",
            _r(hop),
            hop["median"] >= targets["hop"],
        ),
        (
            "Span delivery at the maximum sustained rate",
            "= 1.0",
            f"{delivery:.6f}",
            delivery == targets["delivery"],
        ),
    ]


def floor_lines(data: dict[str, Any]) -> list[str]:
    """What a bare span alone allows, measured in the same run, beside the two ratio targets it
    bounds."""
    s = data["summary"]
    targets = data["targets"]
    trivial, hop = s["trivial"], s["hop"]["worker"]
    floors = (
        (trivial, "floor_sdk"),
        (trivial, "floor_tandem"),
        (hop, "aiohttp_span"),
        (hop, "tandem_bare_span"),
    )
    if not all(row.get(key, {}).get("rps", {}).get("median") for row, key in floors):
        return []  # a run from before the floors were measured

    def against(floor: dict[str, float], target: float) -> str:
        relation = "below" if floor["median"] < target else "at or above"
        return f"{_r(floor)}, {relation} the target of {target:.2f}"

    return [
        "**The floors.** The same run measured what one span costs when nothing else is done: no "
        "attribute, no context for the app, no metric, no propagation, no header; the span "
        "exported like the others.",
        "",
        "| Floor | ratio, median [min–max] |",
        "|---|---|",
        "| (e) a middleware starting and ending one SERVER span through the SDK's "
        "`Tracer.start_span`, / (a) | "
        f"{against(trivial['floor_sdk']['ratio'], targets['trivial'])} |",
        f"| (f) the same SDK span started through Tandem's `RequestTracer`, / (a) | "
        f"{against(trivial['floor_tandem']['ratio'], targets['trivial'])} |",
        f"| raw aiohttp with one bare CLIENT span per call, / raw aiohttp (worker stand-in) | "
        f"{against(hop['aiohttp_span']['ratio'], targets['hop'])} |",
        "| Tandem's client (httpx API) with its tracing off and one bare CLIENT span per call, "
        "started through `RequestTracer`, / raw aiohttp | "
        f"{against(hop['tandem_bare_span']['ratio'], targets['hop'])} |",
        "",
        "A floor below its target means no instrumentation built that way can meet the target on "
        "this machine, whatever else it leaves out. Sections 1 and 3 hold the rows; section 6 and "
        "the notes at the end itemise what Tandem's middleware and client add to them.",
        "",
    ]


def path_lines(data: dict[str, Any]) -> list[str]:
    """The fast path beside the public API path (TANDEM_FAST_PATH=off), in the same rounds."""
    s = data["summary"]
    pairs = (
        ("Trivial route, ratio to (a)", s["trivial"], "tandem", "tandem_public", "ratio"),
        ("Full path, req/s", s["full"], "traced", "traced_public", "rps"),
        (
            "Hop (worker stand-in), ratio to raw aiohttp",
            s["hop"]["worker"],
            "tandem",
            "tandem_public",
            "ratio",
        ),
    )
    if not all(public in section for _, section, _, public, _ in pairs):
        return []  # a run from before the public path was measured
    lines = [
        "**Both paths.** The same rounds measured Tandem on OpenTelemetry's public API path "
        "(`TANDEM_FAST_PATH=off`: `Tracer.start_span`, `Histogram.record`, the SDK's OTLP encoder) "
        "beside the default, which on this SDK release is the fast path "
        "(`tandem_telemetry/fastpath.py`).",
        "",
        "| Measure | fast path (auto), median [min–max] | public path (off) | public / fast |",
        "|---|---|---|---|",
    ]
    for label, section, fast, public, key in pairs:
        fmt = _r if key == "ratio" else _s
        ratio = (
            section[public][key]["median"] / section[fast][key]["median"]
            if section[fast][key]["median"]
            else 0.0
        )
        lines.append(
            f"| {label} | {fmt(section[fast][key])} | {fmt(section[public][key])} | {ratio:.2f} |"
        )
    lines.append("")
    return lines


def write_markdown(data: dict[str, Any], path: Path) -> None:
    s = data["summary"]
    labels = data["labels"]
    tasks, spans_per_request, tutorial_rps = (
        data["tasks"],
        data["spans_per_request"],
        data["tutorial_rps"],
    )
    m = data["machine"]
    size = data["size"]
    load = data["load"]
    d = data["delivery"]
    lines: list[str] = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add(
        f"Produced by `{data['command']}` on {m['date']}, in {data['seconds'] / 60:.1f} minutes "
        f"({size['name']} size: {size['rounds']} interleaved rounds). The chart: "
        "[benchmarks.png](benchmarks.png)."
    )
    if data["generator"] != "wrk":
        add("")
        add("> **Not publishable**: this run used the Python stand-in load generator, not wrk.")
    if (len(s["trivial"]), len(s["full"])) != (len(labels["trivial"]), len(labels["full"])):
        add("")
        add(
            f"> **A subset**: the {size['name']} size measures some of the variants below; "
            "`make bench` measures all of them."
        )
    add("")
    add("## Machine")
    add("")
    add("| | |")
    add("|---|---|")
    add(f"| CPUs (`nproc`) | {m['nproc']} |")
    add(f"| CPU model (/proc/cpuinfo) | {m['cpu']} |")
    add(f"| Memory | {m['memory_gib']} GiB |")
    add(f"| Python | {m['python']} |")
    add(f"| Kernel | {m['kernel']} |")
    add(f"| Load generator | {m['loadgen']} |")
    add("| Packages | " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + " |")
    add(f"| Command | `{data['command']}` |")
    add("")
    add(
        "Everything ran on this one machine, on loopback: wrk, the services, the collector. The "
        "machine is shared and noisy; hence several interleaved rounds, and every figure below is "
        "the **median [min–max]** over them."
    )
    add("")
    add("## Against the targets")
    add("")
    add("| Measure | Target | Measured, median [min–max] | |")
    add("|---|---|---|---|")
    for measure, target, measured, ok in target_rows(data):
        add(f"| {measure} | {target} | {measured} | {_met(ok)} |")
    add("")
    for line in floor_lines(data):
        add(line)
    for line in path_lines(data):
        add(line)

    add("## 1. Middleware overhead on a trivial route")
    add("")
    add(
        "`GET /hello` on one Starlette app, served like the services (hypercorn, uvloop, one "
        f"process). wrk -t{load['trivial_threads']} -c{load['trivial_connections']}, "
        f"{size['trivial_seconds']:.0f} s per measurement. (b)–(f) sample 100% and export through "
        "the SDK's BatchSpanProcessor and OTLP/gRPC exporter to the collector, a separate process. "
        "Ratios are per round, to (a) of the same round."
    )
    add("")
    add("| Variant | req/s | ratio to (a) | requests | errors |")
    add("|---|---|---|---|---|")
    for variant in s["trivial"]:
        label, row = labels["trivial"][variant], s["trivial"][variant]
        add(
            f"| {label} | {_s(row['rps'])} | {_r(row['ratio'])} | {row['requests']} | "
            f"{row['errors']} |"
        )
    add("")

    add("## 2. The full path")
    add("")
    add(
        f"`GET /api/work?tasks={tasks}`: gateway → {tasks} × worker → gateway (quota), "
        f"{spans_per_request} spans per request when traced. wrk -t{load['full_threads']} "
        f"-c{load['full_connections']}, {size['full_seconds']:.0f} s per measurement."
    )
    add("")
    add(
        "| Variant | req/s | p50 ms | p99 ms | ratio to disabled | ratio to contrib | requests | "
        "errors |"
    )
    add("|---|---|---|---|---|---|---|---|")
    for variant in s["full"]:
        label, row = labels["full"][variant], s["full"][variant]
        add(
            f"| {label} | {_s(row['rps'])} | {_s(row['p50_ms'], '{:.1f}')} | "
            f"{_s(row['p99_ms'], '{:.1f}')} | {_r(row['ratio_to_disabled'])} | "
            f"{_r(row['ratio_to_contrib'])} | {row['requests']} | {row['errors']} |"
        )
    traced_rps = s["full"]["traced"]["rps"]["median"]
    add("")
    add(
        "Against a tutorial-style setup measured earlier "
        f"({tutorial_rps:.0f} req/s on this machine; "
        "hypercorn CLI defaults, httpx default transport, a start_as_current_span middleware; not "
        f"re-measured here): {traced_rps / tutorial_rps:.1f} ×. The contrib row above is the "
        "closest measured relative of it."
    )
    add("")

    add("## 3. The hop")
    add("")
    add(
        f"One client process, {load['hop_concurrency']} requests in flight, `POST /tasks` with a "
        f"JSON body, the JSON answer parsed; {size['hop_seconds']:g} s per measurement after "
        f"{size['hop_warmup']:g} s of warm-up, uvloop. Tandem's client is "
        "`tandem_telemetry.create_client` as the gateway uses it (httpx over httpx-aiohttp, "
        "retries, total timeout), traced and exporting to the collector, and once more with "
        "OTEL_SDK_DISABLED=true to separate the cost of tracing from the cost of the client."
    )
    add("")
    add("| Server | Client | req/s | ratio to raw aiohttp | requests | errors |")
    add("|---|---|---|---|---|---|")
    for server in s["hop"]:
        for kind in s["hop"][server]:
            server_label, label = labels["hop_server"][server], labels["hop_client"][kind]
            row = s["hop"][server][kind]
            add(
                f"| {server_label} | {label} | {_s(row['rps'])} | {_r(row['ratio'])} | "
                f"{row['requests']} | {row['errors']} |"
            )
    add("")
    if "tandem_untraced" in s["hop"]["worker"]:
        traced, untraced = (
            s["hop"]["worker"]["tandem"]["rps"]["median"],
            s["hop"]["worker"]["tandem_untraced"]["rps"]["median"],
        )
        if untraced:
            add(
                "Against the worker stand-in, tracing (a CLIENT span, its duration metric and the "
                f"span's export, all in the client's process) takes the client from {untraced:.0f} "
                f"to {traced:.0f} req/s ({traced / untraced:.2f} ×)."
            )
            add("")

    add("## 4. Span delivery")
    add("")
    add(
        f"Fresh collector, gateway and worker; the full path at wrk -t{load['full_threads']} "
        f"-c{load['full_connections']} (the load that gives section 2 its highest rate) for "
        f"{d['seconds']:.0f} s. Expected spans are {spans_per_request} (1 + 6N, N = {tasks}) for "
        "every `/api/work` request the gateway served, counted by its "
        "`http.server.request.duration` histogram (a metric, independent of span export); received "
        "spans are the collector's `tandem_collector_spans_received_total`. Both are read after "
        "the counters stopped moving."
    )
    add("")
    add("| | |")
    add("|---|---|")
    add(f"| Rate | {d['rps']:.0f} req/s (p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms) |")
    add(
        "| Requests completed by wrk / served by the gateway (200) / served in all | "
        f"{d['wrk_requests']} / {d['served_ok']:.0f} / {d['served']:.0f} |"
    )
    add(f"| Spans expected | {d['spans_expected']:.0f} |")
    add(f"| Spans received by the collector | {d['spans_received']:.0f} |")
    add(f"| **Received / expected** | **{d['ratio']:.6f}** |")
    add(
        "| Spans the SDK reported lost (`tandem.telemetry.spans.lost`) | "
        f"{d['spans_lost_reported']:.0f} |"
    )
    add("| BSP settings | " + ", ".join(f"`{k}={v}`" for k, v in d["bsp_settings"].items()) + " |")
    add("")
    add(
        "wrk stops with requests in flight; the gateway still serves them (hypercorn does not "
        "cancel a request whose client left), which is why the gateway's count, not wrk's, is the "
        "denominator."
    )
    add("")

    add("## 5. Memory")
    add("")
    add("VmRSS from /proc/<pid>/status, in MiB.")
    add("")
    add("| Process | before the run | at its end | after the last export |")
    add("|---|---|---|---|")
    rss = d["rss_kib"]
    for process in ("gateway", "worker"):
        add(
            f"| {process} | {rss['before'][process] / 1024:.1f} | "
            f"{rss['end_of_run'][process] / 1024:.1f} | {rss['settled'][process] / 1024:.1f} |"
        )
    add("")

    micro = data.get("micro") or {}
    if micro:
        add("## 6. Where the time goes, in-process")
        add("")
        add(
            "`python -m benchmarks.micro` (benchmarks/micro.py), run at the end of the same run: "
            "the request path called directly, no network, best of 7 batches, µs per request. "
            "Spans go through the SDK's BatchSpanProcessor to an exporter that drops them; the "
            "OTLP encoding rows are what the real exporter then spends per span, on the "
            "processor's thread of the same process."
        )
        add("")
        add("| Path | µs |")
        add("|---|---|")
        rows = [
            ("Trivial app, no middleware", "server-untraced"),
            ("Trivial app, Tandem's middleware, OTEL_SDK_DISABLED", "server-disabled"),
            (
                "The same, the request carrying a traceparent and baggage, which stay current "
                "(and go on in traceresponse)",
                "server-disabled-caller",
            ),
            ("Trivial app, Tandem's middleware, traced", "server-traced"),
            (
                "— of that, the server span through Tandem's RequestTracer (start, 2 outcome "
                "attributes, end)",
                "request span",
            ),
            (
                "— of that, the duration record through Tandem's DurationHistogram",
                "duration histogram",
            ),
            (
                "The same server span through the SDK's Tracer.start_span, for comparison",
                "sdk span",
            ),
            (
                "The same duration record through the SDK's Histogram.record, for comparison",
                "sdk histogram",
            ),
            (
                "OTLP encoding of one such server span, Tandem's encoder (processor thread)",
                "tandem encoder, server span",
            ),
            (
                "OTLP encoding of one such server span, the SDK's encoder, for comparison",
                "sdk encoder, server span",
            ),
            ("httpx.AsyncClient, POST JSON + read JSON, canned transport", "client-httpx"),
            ("Tandem's create_client, same call, OTEL_SDK_DISABLED", "client-disabled"),
            ("Tandem's create_client, same call, traced", "client-traced"),
            ("OTLP encoding of one client span, Tandem's encoder", "tandem encoder, client span"),
            (
                "OTLP encoding of one client span, the SDK's encoder, for comparison",
                "sdk encoder, client span",
            ),
        ]
        for label, key in rows:
            if key in micro:
                add(f"| {label} | {micro[key]:.1f} |")
        untraced_rps = s["trivial"]["untraced"]["rps"]["median"]
        if (
            untraced_rps
            and {
                "server-untraced",
                "server-traced",
                "sdk span",
                "sdk histogram",
                "sdk encoder, server span",
                "tandem encoder, server span",
            }
            <= micro.keys()
        ):
            served = 1e6 / untraced_rps
            sdk_floor = (
                micro["sdk span"] + micro["sdk histogram"] + micro["sdk encoder, server span"]
            )
            request_path = micro["server-traced"] - micro["server-untraced"]
            actual = request_path + micro["tandem encoder, server span"]
            add("")
            add(
                f"(a) served a request in {served:.0f} µs of its process's time "
                f"({untraced_rps:.0f} req/s). Tracing adds {actual:.0f} µs to that in the same "
                f"process ({request_path:.0f} on the request path, "
                f"{micro['tandem encoder, server span']:.0f} encoding the span), which alone would "
                f"put (b) at about {served / (served + actual):.2f} × (a). The SDK's generic span, "
                f"histogram and encoder alone are {sdk_floor:.0f} µs: a middleware with no code of "
                "its own, making the same span and metric through them, would be bounded at about "
                f"{served / (served + sdk_floor):.2f} × (a). On the loaded machine every one of "
                "these costs is higher than here, alone in a loop (section 1 shows by how much)."
            )
        add("")
    if data.get("overload"):
        overload = data["overload"]
        lines.extend(overload_lines(overload, standalone=overload["standalone"]))
        add("")
    add("## How it was measured")
    add("")
    add(
        "- `make bench` runs `python -m benchmarks` (benchmarks/harness.py); `make test` runs it "
        "at a smoke size (tests/bench): every section, on its baseline and Tandem's own variant; "
        "it asserts that each measurement ran, never a timing."
    )
    add(
        "- One run measures everything. Sections 1–3 are interleaved: each round measures every "
        "variant of every section once, the order rotating from round to round; ratios are taken "
        "within a round."
    )
    add(
        "- Every traced process uses the same telemetry settings: "
        + ", ".join(f"`{k}={v}`" for k, v in data["telemetry_env"].items())
        + "; 100% sampling (the default `parentbased_always_on`). The collector runs `--quiet`."
    )
    if data.get("service_env") == {"MAX_IN_FLIGHT": "0"}:
        add(
            "- Sections 1–5 run the services with `MAX_IN_FLIGHT=0`: they measure the traced "
            "path, not overload, and their 32 connections would pass the default admission limit."
        )
    add(
        "- Services and variants are separate processes, all running for the whole of sections 1–3 "
        "(idle when not measured); wrk, the services and the collector share the two cores, "
        "unpinned."
    )
    add(
        "- Section 3's worker stand-in is a Starlette app on hypercorn like the worker, untraced; "
        "the raw-socket server answers from a fixed buffer, so that its rows show what each client "
        "itself costs."
    )
    add("")
    if NOTES.exists():
        add(NOTES.read_text().rstrip())
        add("")
    path.write_text("\n".join(lines))


def write_chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = data["summary"]
    tutorial_rps = data["tutorial_rps"]
    fig, axes = plt.subplots(2, 2, figsize=(15, 9))
    m = data["machine"]
    fig.suptitle(
        f"Tandem benchmarks — {m['nproc']} × {m['cpu']}, Python {m['python']}, {m['date']} "
        f"(median, bars: min–max over {data['size']['rounds']} rounds)",
        fontsize=11,
    )

    def bars(ax, labels, spreads, color):
        medians = [x["median"] for x in spreads]
        low = [x["median"] - x["min"] for x in spreads]
        high = [x["max"] - x["median"] for x in spreads]
        ax.bar(range(len(labels)), medians, yerr=[low, high], capsize=4, color=color)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        for i, (value, top) in enumerate(zip(medians, (x["max"] for x in spreads), strict=True)):
            ax.annotate(
                f"{value:.2f}" if value < 10 else f"{value:.0f}",
                (i, top),
                textcoords="offset points",
                xytext=(0, 4),
                ha="center",
                fontsize=8,
            )

    ax = axes[0][0]
    names = list(s["trivial"])
    bars(
        ax,
        [TRIVIAL_SHORT[v] for v in names],
        [s["trivial"][v]["ratio"] for v in names],
        [TRIVIAL_COLORS[v] for v in names],
    )
    ax.axhline(0.85, color="#2a7ab9", linestyle="--", linewidth=1, label="target for (b): 0.85")
    ax.set_title("1. Trivial route: req/s as a ratio to (a)", fontsize=10)
    ax.set_ylim(0, 1.15)
    ax.legend(fontsize=8)

    ax = axes[0][1]
    names = list(s["full"])
    full_labels = {
        "traced": "traced",
        "traced_public": "traced,\npublic path",
        "disabled": "OTEL_SDK_DISABLED",
        "contrib": "contrib ASGI+httpx",
    }
    full_colors = {
        "traced": "#2a7ab9",
        "traced_public": "#6baed6",
        "disabled": "#999999",
        "contrib": "#d98c2b",
    }
    bars(
        ax,
        [full_labels[v] for v in names],
        [s["full"][v]["rps"] for v in names],
        [full_colors[v] for v in names],
    )
    ax.axhline(
        4 * tutorial_rps,
        color="#2a7ab9",
        linestyle="--",
        linewidth=1,
        label=f"4 × tutorial-style ({4 * tutorial_rps:.0f})",
    )
    if "disabled" in s["full"]:
        disabled = s["full"]["disabled"]["rps"]["median"]
        ax.axhline(
            0.8 * disabled, color="#555555", linestyle=":", linewidth=1, label="0.80 × disabled"
        )
    ax.set_title(f"2. Full path GET /api/work?tasks={data['tasks']}: req/s", fontsize=10)
    ax.legend(fontsize=8)

    ax = axes[1][0]
    width = 0.38
    clients = [
        kind
        for kind in data["labels"]["hop_client"]
        if any(kind in row for row in s["hop"].values())
    ]
    for j, server in enumerate(s["hop"]):
        for i, kind in enumerate(clients):
            if kind not in s["hop"][server]:
                continue
            spread = s["hop"][server][kind]["rps"]
            x = i + (j - 0.5) * width
            ax.bar(
                x,
                spread["median"],
                width,
                yerr=[[spread["median"] - spread["min"]], [spread["max"] - spread["median"]]],
                capsize=3,
                color=HOP_COLORS[kind],
                alpha=1.0 if server == "worker" else 0.45,
            )
            ax.annotate(
                f"{spread['median']:.0f}",
                (x, spread["max"]),
                textcoords="offset points",
                xytext=(0, 4),
                ha="center",
                fontsize=7,
            )
    ax.set_xticks(range(len(clients)), [HOP_SHORT[k] for k in clients], fontsize=8)
    ax.set_title(
        "3. Hop, 32 in flight: req/s (solid: worker stand-in; pale: raw-socket server)", fontsize=10
    )

    ax = axes[1][1]
    d = data["delivery"]
    rss = d["rss_kib"]
    stages = ["before", "end_of_run", "settled"]
    for j, stage in enumerate(stages):
        values = [rss[stage]["gateway"] / 1024, rss[stage]["worker"] / 1024]
        xs = [i + (j - 1) * 0.27 for i in range(2)]
        ax.bar(
            xs,
            values,
            0.27,
            label={"before": "before", "end_of_run": "end of run", "settled": "after last export"}[
                stage
            ],
            color=["#bbbbbb", "#2a7ab9", "#7fb3dd"][j],
        )
        for x, v in zip(xs, values, strict=True):
            ax.annotate(
                f"{v:.0f}",
                (x, v),
                textcoords="offset points",
                xytext=(0, 3),
                ha="center",
                fontsize=7,
            )
    ax.set_xticks([0, 1], ["gateway", "worker"])
    ax.set_ylabel("VmRSS, MiB")
    ax.set_title(
        f"4–5. {d['seconds']:.0f} s at {d['rps']:.0f} req/s: spans received / expected = "
        f"{d['ratio']:.4f}; RSS",
        fontsize=10,
    )
    ax.legend(fontsize=8)

    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- Section 7: overload (benchmarks/overload.py) ----------------------------------------------

OVERLOAD_CHART = "benchmarks-overload.png"
OVERLOAD_NOTES = Path(__file__).with_name("NOTES-overload.md")
# `make bench-overload` replaces what lies between these lines, and nothing else.
OVERLOAD_BEGIN = "<!-- overload: begin (benchmarks/overload.py) -->"
OVERLOAD_END = "<!-- overload: end -->"
OVERLOAD_COLORS = {"on": "#2a7ab9", "off": "#d98c2b"}


def _ms(spread: dict[str, float]) -> str:
    return _s(spread, "{:.1f}")


def _load(values: list[float] | tuple[float, ...]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def overload_lines(data: dict[str, Any], *, standalone: bool) -> list[str]:
    """Section 7, from a benchmarks.overload run; `standalone`: run apart from the other
    sections."""
    o = data
    targets, configs = o["targets"], o["configs"]
    s = o["summary"]
    cap = o["capacity"]
    m = o["machine"]
    size = o["size"]
    lines: list[str] = [OVERLOAD_BEGIN, "## 7. Overload", ""]
    add = lines.append
    produced = (
        f"Produced by `{o['command']}` on {m['date']}, in {o['seconds'] / 60:.1f} minutes, "
        "apart from the other sections (which keep the figures of their own run)"
        if standalone
        else f"Measured in the same run, in {o['seconds'] / 60:.1f} minutes"
    )
    add(
        f"{produced}. Load average (1 min) when it started and ended: "
        f"{o['load_average_start'][0]:.2f} and {o['load_average_end'][0]:.2f} (the run's own "
        "processes count in it: about 2 while a measurement runs); before each measurement, in "
        f"the `load` column. The chart: [{OVERLOAD_CHART}]({OVERLOAD_CHART})."
    )
    if o["generator"] != "wrk":
        add("")
        add("> **Not publishable**: this run used the Python stand-in load generator, not wrk.")
    add("")
    add(
        f"`GET /api/work?tasks={o['tasks']}` through a gateway and a worker (one process each) "
        "and their collector, closed-loop: each wrk connection sends its next request as soon as "
        "an answer comes, shed or not, and ignores `Retry-After`. Such stacks run side by side: "
        + "; ".join(f"**{k}**: {v}" for k, v in configs.items())
        + (
            "; and, at the 4× and 16× loads only, one for each of the other limits in the table "
            "after the targets"
            if o["size"].get("limit_variants")
            else ""
        )
        + ". wrk's script (benchmarks/wrk_overload.lua) gives each request a trace id of its own "
        "and matches the answer by its `traceresponse`, so latency is split by outcome: "
        "**success** (2xx), **shed** (503 with `Retry-After`) and **other** (any other status)."
    )
    add("")
    multiples = " and ".join(f"{k}×" for k in size["multiples"])
    fixed = ", ".join(str(n) for n in size.get("fixed", ()))
    add(
        f"**Capacity** is the highest goodput (successes per second) of the limit-on sweep below: "
        f"**{cap['goodput']:.1f}/s**, first reached (within {100 * (1 - o['plateau']):.0f}%) at "
        f"**{cap['connections']} connections**, where successes took p99 "
        f"**{cap['ok_p99_ms']:.1f} ms** (the limit-off sweep's highest goodput: "
        f"{cap['off_goodput']:.1f}/s). The overload runs use {multiples} those connections"
        + (
            f", and {fixed} connections (the worst case measured before the limit existed)"
            if fixed
            else ""
        )
        + f"; {size['overload_seconds']:.0f} s each, in {size['rounds']} round(s), the order "
        "rotating; figures are the median [min–max] over the rounds."
    )
    add("")
    targeted = [name for name in _overload_keys(o) if s[name]["targeted"]]
    add("| Target | " + " | ".join(_overload_header(o, name) for name in targeted) + " |")
    add("|---|" + "---|" * len(targeted))
    goodput_target = targets["goodput"] * cap["goodput"]
    p99_target = targets["ok_p99_ratio"] * cap["ok_p99_ms"]
    rows = [
        (
            f"Goodput ≥ {targets['goodput']:.0%} of capacity (≥ {goodput_target:.1f}/s)",
            "goodput",
            lambda e: f"{_s(e['goodput'], '{:.1f}')}/s = {e['goodput_ratio']['median']:.0%}",
        ),
        (
            f"Shed p99 < {targets['shed_p99_ms']:.0f} ms",
            "shed_p99",
            lambda e: f"{_ms(e['shed_p99_ms'])} ms" if e["shed"] else "nothing shed",
        ),
        (
            f"Success p99 ≤ {targets['ok_p99_ratio']:.0f} × {cap['ok_p99_ms']:.1f} ms "
            f"(≤ {p99_target:.0f} ms)",
            "ok_p99",
            lambda e: f"{_ms(e['ok_p99_ms'])} ms = {e['ok_p99_ratio']['median']:.1f} ×",
        ),
    ]
    for label, key, show in rows:
        cells = [f"{show(s[name])} {_met(s[name]['met'][key])}" for name in targeted]
        add(f"| {label} | " + " | ".join(cells) + " |")
    add("")
    lines.extend(_limit_lines(o, rows))
    add("**The sweep.**")
    add("")
    add(
        "| Connections | goodput on /s | goodput off /s | success p99 on ms | success p99 off ms "
        "| shed on /s | shed p99 on ms | load |"
    )
    add("|---|---|---|---|---|---|---|---|")
    by_connections: dict[int, dict[str, dict[str, Any]]] = {}
    for row in o["sweep"]:
        by_connections.setdefault(row["connections"], {})[row["config"]] = row
    for connections, pair in sorted(by_connections.items()):
        on, off = pair.get("on"), pair.get("off")
        if on is None or off is None:
            continue
        add(
            f"| {connections} | {on['goodput']:.1f} | {off['goodput']:.1f} | "
            f"{on['ok']['p99_ms']:.1f} | {off['ok']['p99_ms']:.1f} | "
            f"{on['shed']['count'] / on['seconds']:.0f} | "
            f"{on['shed']['p99_ms']:.1f} | {on['load_average']:.2f} |"
        )
    add("")
    add("**Under overload**, per configuration and load:")
    add("")
    add(
        "| | connections | goodput /s | success p50 / p99 ms | shed /s | shed p50 / p99 ms "
        "| other answers | socket errors | peak RSS gateway / worker MiB | /readyz max ms "
        "(failed) | spans expected / received / lost |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in _overload_keys(o):
        e = s[name]
        config = name.split("-")[0]
        statuses = dict(e["other_statuses"])
        # The 503s with Retry-After are the shed column's; what is left is another answer.
        statuses["503"] = statuses.get("503", 0) - e["shed"]
        others = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()) if v > 0) or "0"
        spans = e["spans"]
        add(
            f"| limit {config}, {_load_label(e)} | {e['connections']} | "
            f"{_s(e['goodput'], '{:.1f}')} | "
            f"{_ms(e['ok_p50_ms'])} / {_ms(e['ok_p99_ms'])} | {_s(e['shed_per_second'])} | "
            + (f"{_ms(e['shed_p50_ms'])} / {_ms(e['shed_p99_ms'])}" if e["shed"] else "–")
            + f" | {others} | {e['socket_errors']} | "
            f"{e['rss_peak_mib']['gateway']:.0f} / {e['rss_peak_mib']['worker']:.0f} | "
            f"{e['readyz']['max_ms']:.0f} ({e['readyz']['failures']} of {e['readyz']['probes']}) | "
            f"{spans['expected']:.0f} / {spans['received']:.0f} / {spans['lost']:.0f} |"
        )
    add("")
    add(f"**Where the CPU went**, in cores, median over the rounds (the machine has {m['nproc']}):")
    add("")
    add("| | gateway | worker | collector | wrk | whole machine | of it, interrupts |")
    add("|---|---|---|---|---|---|---|")
    for name in _overload_keys(o):
        e = s[name]
        c = e["cpu"]
        add(
            f"| limit {name.split('-')[0]}, {_load_label(e)} | {c['gateway']:.2f} | "
            f"{c['worker']:.2f} | {c['collector']:.2f} | {c['loadgen']:.2f} | "
            f"{c['machine']:.2f} | {c['interrupts']:.2f} |"
        )
    add("")
    add(
        "Peak RSS is sampled every 0.2 s during each measurement (before the first: "
        + ", ".join(
            f"{config} {s[name]['rss_start_mib']['gateway']:.0f} / "
            f"{s[name]['rss_start_mib']['worker']:.0f}"
            for config in configs
            for name in _overload_keys(o)[:2]
            if name.startswith(f"{config}-")
        )
        + " MiB). /readyz is called every 0.5 s during each measurement with the chart's "
        f"probe timeout, {o['probe_timeout_seconds']} s. The whole machine's CPU is /proc/stat's "
        "busy time, other tenants included. Spans expected are counted from the services' "
        "duration metrics (one SERVER or CLIENT span per recorded request, plus compute and "
        "publish for each task the worker served); received is the collector's count; lost is "
        "what the services' batch processors reported dropped (`tandem.telemetry.spans.lost`), all "
        "read after the "
        "counters stopped moving. The shed counter (`tandem.server.requests.shed`) counted "
        + ", ".join(
            f"{s[name]['shed_counted']:.0f} (wrk saw {s[name]['shed']}) at {_load_label(s[name])}"
            for name in _overload_keys(o)
            if name.startswith("on-")
        )
        + "; it also counts the requests still in flight when wrk stopped."
    )
    add("")
    if OVERLOAD_NOTES.exists():
        add(OVERLOAD_NOTES.read_text().rstrip())
        add("")
    add(OVERLOAD_END)
    return lines


def _load_label(entry: dict[str, Any]) -> str:
    label = entry["load"]
    return label.replace("x", "×") if entry["targeted"] else f"{entry['connections']} fixed"


def _overload_keys(o: dict[str, Any]) -> list[str]:
    """The on and off entries of the summary, in the order measured: load by load, on first."""
    return [name for name in o["summary"] if name.split("-")[0] in o["configs"]]


def _limit_lines(
    o: dict[str, Any], cells: list[tuple[str, str, Callable[[dict[str, Any]], str]]]
) -> list[str]:
    """The targets per gateway limit at each multiple: the default, the other limits, none."""
    s = o["summary"]
    # The configuration that ran each other limit (MAX_IN_FLIGHT on both services).
    variant = {
        int(env["MAX_IN_FLIGHT"]): config
        for config, env in o["config_env"].items()
        if config not in o["configs"]
    }
    defaults = o.get("default_limits")
    limits = sorted(o["size"].get("limit_variants", ()))
    if not limits or not defaults:
        return []
    # (configuration, as shown, its gateway limit): smallest limit first, no limit last.
    columns = sorted(
        [
            *((variant[n], f"{n}", n) for n in limits),
            ("on", f"{defaults['gateway']} (default)", defaults["gateway"]),
        ],
        key=lambda column: column[2],
    )
    columns.append(("off", "off", 0))
    lines = [
        "**Other limits.** The same loads, in the same rounds, with other values of "
        "`MAX_IN_FLIGHT` (in tasks, set on both services) beside the defaults (gateway "
        f"{defaults['gateway']}, worker {defaults['worker']}) and no limit:",
        "",
        "| Load | limit | " + " | ".join(label for label, _, _ in cells) + " |",
        "|---|---|" + "---|" * len(cells),
    ]
    for multiple in o["size"]["multiples"]:
        for config, shown, _ in columns:
            entry = s.get(f"{config}-{multiple}x")
            if entry is None:
                continue
            row = [f"{show(entry)} {_met(entry['met'][key])}" for _, key, show in cells]
            lines.append(
                f"| {multiple}×, {entry['connections']} connections | {shown} | "
                + " | ".join(row)
                + " |"
            )
    lines.append("")
    return lines


def _overload_header(o: dict[str, Any], name: str) -> str:
    entry = o["summary"][name]
    return f"limit {name.split('-')[0]}, {_load_label(entry)} ({entry['connections']} connections)"


def write_overload_chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    o = data
    targets = o["targets"]
    cap = o["capacity"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    m = o["machine"]
    fig.suptitle(
        f"Overload, GET /api/work?tasks={o['tasks']} — {m['nproc']} × {m['cpu']}, {m['date']} "
        f"(sweep: one point each; overload: median over {o['size']['rounds']} rounds)",
        fontsize=11,
    )
    for config in o["configs"]:
        color = OVERLOAD_COLORS[config]
        sweep = sorted(
            (r for r in o["sweep"] if r["config"] == config), key=lambda r: r["connections"]
        )
        over = [e for name, e in o["summary"].items() if name.startswith(f"{config}-")]
        label = f"limit {config}"
        left.plot(
            [r["connections"] for r in sweep],
            [r["goodput"] for r in sweep],
            marker="o",
            color=color,
            label=f"{label}, sweep",
        )
        left.plot(
            [e["connections"] for e in over],
            [e["goodput"]["median"] for e in over],
            marker="s",
            linestyle="none",
            markersize=9,
            color=color,
            label=f"{label}, overload runs",
        )
        right.plot(
            [r["connections"] for r in sweep],
            [r["ok"]["p99_ms"] for r in sweep],
            marker="o",
            color=color,
            label=f"{label}: success p99",
        )
        right.plot(
            [e["connections"] for e in over],
            [e["ok_p99_ms"]["median"] for e in over],
            marker="s",
            linestyle="none",
            markersize=9,
            color=color,
        )
        if config == "on":
            shed = [e for e in over if e["shed"]]
            right.plot(
                [e["connections"] for e in shed],
                [e["shed_p99_ms"]["median"] for e in shed],
                marker="v",
                linestyle="none",
                markersize=9,
                color="#555555",
                label="limit on: shed p99",
            )
    left.axhline(
        targets["goodput"] * cap["goodput"],
        color="#555555",
        linestyle="--",
        linewidth=1,
        label=f"{targets['goodput']:.0%} of capacity",
    )
    left.set_xscale("log", base=2)
    left.set_xlabel("wrk connections")
    left.set_ylabel("goodput, successes per second")
    left.set_ylim(bottom=0)
    left.set_title("Goodput", fontsize=10)
    left.legend(fontsize=8)
    right.axhline(
        targets["ok_p99_ratio"] * cap["ok_p99_ms"],
        color="#2a7ab9",
        linestyle="--",
        linewidth=1,
        label=f"{targets['ok_p99_ratio']:.0f} × success p99 at capacity",
    )
    right.axhline(
        targets["shed_p99_ms"],
        color="#555555",
        linestyle=":",
        linewidth=1,
        label=f"shed p99 target, {targets['shed_p99_ms']:.0f} ms",
    )
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("wrk connections")
    right.set_ylabel("ms")
    right.set_title("Latency, p99", fontsize=10)
    right.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- From the results file -------------------------------------------------------------------


def summarize(h: dict[str, Any]) -> dict[str, Any]:
    """Sections 1-3: medians [min–max] and per-round ratios, from the raw rows."""

    def measured(rows: list[dict[str, Any]], key: str, names: dict[str, str]) -> list[str]:
        present = {row[key] for row in rows}  # a smaller size measures fewer
        return [name for name in names if name in present]

    def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "rps": spread([r["rps"] for r in rows]),
            "errors": sum(r["errors"] for r in rows),
            "requests": sum(r["requests"] for r in rows),
        }

    labels = h["labels"]
    summary: dict[str, Any] = {"trivial": {}, "full": {}, "hop": {}}
    for variant in measured(h["trivial"], "variant", labels["trivial"]):
        rows = [r for r in h["trivial"] if r["variant"] == variant]
        summary["trivial"][variant] = {
            **totals(rows),
            "ratio": spread(paired_ratios(h["trivial"], "variant", variant, "untraced")),
        }
    for variant in measured(h["full"], "variant", labels["full"]):
        rows = [r for r in h["full"] if r["variant"] == variant]
        summary["full"][variant] = {
            **totals(rows),
            "p50_ms": spread([r["p50_ms"] for r in rows]),
            "p99_ms": spread([r["p99_ms"] for r in rows]),
            "ratio_to_disabled": spread(paired_ratios(h["full"], "variant", variant, "disabled")),
            "ratio_to_contrib": spread(paired_ratios(h["full"], "variant", variant, "contrib")),
        }
    for server in measured(h["hop"], "server", labels["hop_server"]):
        rows = [r for r in h["hop"] if r["server"] == server]
        summary["hop"][server] = {
            kind: {
                **totals([r for r in rows if r["client"] == kind]),
                "ratio": spread(paired_ratios(rows, "client", kind, "aiohttp")),
            }
            for kind in measured(rows, "client", labels["hop_client"])
        }
    return summary


def summarize_overload(o: dict[str, Any]) -> dict[str, Any]:
    """Section 7, per configuration and load: medians [min–max] over the rounds, and the
    targets, judged on the medians."""
    capacity, targets, size = o["capacity"], o["targets"], o["size"]
    loads = [f"{k}x" for k in size["multiples"]] + [f"{n}c" for n in size.get("fixed", ())]
    summary: dict[str, Any] = {}
    for label in loads:
        for config in o["config_env"]:
            rows = [r for r in o["overload"] if r["config"] == config and r["load"] == label]
            if not rows:
                continue
            shed_rows = [r for r in rows if r["shed"]["count"]]
            goodput = spread([r["goodput"] for r in rows])
            ok_p99 = spread([r["ok"]["p99_ms"] for r in rows])
            shed_p99 = spread([r["shed"]["p99_ms"] for r in shed_rows])
            other_statuses: dict[str, int] = {}
            for row in rows:
                for status, count in row["statuses"].items():
                    if not status.startswith("2"):
                        other_statuses[status] = other_statuses.get(status, 0) + count
            entry = {
                "load": label,
                "connections": rows[0]["connections"],
                "targeted": label.endswith("x"),
                "goodput": goodput,
                "goodput_ratio": spread([r["goodput"] / capacity["goodput"] for r in rows]),
                "ok_p50_ms": spread([r["ok"]["p50_ms"] for r in rows]),
                "ok_p99_ms": ok_p99,
                "ok_p99_ratio": spread([r["ok"]["p99_ms"] / capacity["ok_p99_ms"] for r in rows]),
                "shed_per_second": spread([r["shed"]["count"] / r["seconds"] for r in rows]),
                "shed_p50_ms": spread([r["shed"]["p50_ms"] for r in shed_rows]),
                "shed_p99_ms": shed_p99,
                "shed": sum(r["shed"]["count"] for r in rows),
                "other_statuses": other_statuses,
                "socket_errors": sum(r["socket_errors"] for r in rows),
                "rss_peak_mib": {
                    p: max(r["rss_kib"]["peak"][p] for r in rows) / 1024
                    for p in ("gateway", "worker")
                },
                "rss_start_mib": {
                    p: min(r["rss_kib"]["start"][p] for r in rows) / 1024
                    for p in ("gateway", "worker")
                },
                "cpu": {
                    p: statistics.median(r["cpu"][p] for r in rows)
                    for p in ("gateway", "worker", "collector", "loadgen", "machine", "interrupts")
                },
                "readyz": {
                    "probes": sum(r["readyz"]["probes"] for r in rows),
                    "failures": sum(r["readyz"]["failures"] for r in rows),
                    "max_ms": max(r["readyz"]["max_ms"] for r in rows),
                },
                "spans": {
                    key: sum(r["spans"][key] for r in rows)
                    for key in ("expected", "received", "lost")
                },
                "shed_counted": sum(
                    r["spans"]["shed_counted_gateway"] + r["spans"]["shed_counted_worker"]
                    for r in rows
                ),
                "rounds": len(rows),
            }
            entry["met"] = {
                "goodput": goodput["median"] >= targets["goodput"] * capacity["goodput"],
                "shed_p99": bool(entry["shed"]) and shed_p99["median"] < targets["shed_p99_ms"],
                "ok_p99": ok_p99["median"] <= targets["ok_p99_ratio"] * capacity["ok_p99_ms"],
            }
            summary[f"{config}-{label}"] = entry
    return summary


def views(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The harness's figures and the overload section's, each with the run that measured it
    and its summary: what the writers above take."""
    sections, run = results["sections"], results["run"]
    data = {
        **sections["harness"],
        **{key: run[key] for key in ("machine", "command", "generator", "seconds")},
        "micro": sections.get("micro", {}).get("cases", {}),
    }
    data["summary"] = summarize(data)
    overload = None
    if "overload" in sections:
        own = sections["overload"].get("run")
        overload = {
            **sections["overload"],
            **{key: (own or run)[key] for key in ("machine", "command", "generator")},
            "standalone": own is not None,
        }
        overload["summary"] = summarize_overload(overload)
    data["overload"] = overload
    return data, overload


def render(results: dict[str, Any], out: Path) -> None:
    """benchmarks.md, benchmarks.png and (with section 7) the overload chart, into `out`."""
    data, overload = views(results)
    out.mkdir(parents=True, exist_ok=True)
    write_markdown(data, out / "benchmarks.md")
    write_chart(data, out / "benchmarks.png")
    if overload:
        write_overload_chart(overload, out / OVERLOAD_CHART)


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
