"""`make bench-collector` (benchmarks/collector_capacity.py) at a smoke size, with the real
Collector: a step accounts for every span it offered, and what the Collector drops after
accepting is read from the metric families that count it, so that a lossy step cannot pass
for a lossless one. Nothing here asserts a rate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from benchmarks.collector_capacity import (
    CONFIG,
    DROPS,
    Collector,
    Sink,
    Step,
    export_request,
    own_drops,
    run_step,
)

GATEWAY_TIER = CONFIG.with_name("otelcol-gateway.yaml")
EVICTED = "evicted undecided (traces)"


def one_step(otelcol: Path, rate: float, spans_per_trace: int, drain: float) -> Step:
    async def run() -> Step:
        sink = Sink()
        await sink.server.start()
        collector = Collector(otelcol, sink.port, cpu=0, cgroup=None)
        try:
            collector.wait_ready()
            payload = export_request(spans_per_trace=spans_per_trace)
            return await run_step(collector, sink, payload, rate, 1.0, drain)
        finally:
            collector.stop()
            await sink.server.stop(None)

    return asyncio.run(run())


def test_a_step_through_the_charts_collector_delivers_what_it_accepted(otelcol: Path) -> None:
    step = one_step(otelcol, rate=5000, spans_per_trace=7, drain=30)
    assert step.accepted >= 512 and step.refused_text == "0", step
    assert step.delivered == step.accepted, step
    assert set(step.dropped) == set(DROPS) and step.dropped_text == "0", step
    assert step.cpu_seconds > 0 and step.rss_mib > 0, step


def test_traces_the_tail_sampler_evicts_undecided_are_counted(
    otelcol: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 512 one-span traces an export, 100 held at most: the rest evicted before their decision.
    # The wait outlasts the step however loaded the machine, so that no decision frees room
    # between its two exports.
    monkeypatch.setenv("TANDEM_BENCH_OTELCOL_CONFIG", str(GATEWAY_TIER))
    monkeypatch.setenv("OTELCOL_TAIL_NUM_TRACES", "100")
    monkeypatch.setenv("OTELCOL_TAIL_DECISION_WAIT", "10s")

    async def run() -> tuple[Step, int]:
        sink = Sink()
        await sink.server.start()
        collector = Collector(otelcol, sink.port, cpu=0, cgroup=None)
        try:
            collector.wait_ready()
            payload = export_request(spans_per_trace=1)
            step = await run_step(collector, sink, payload, 1024, 1.0, drain=0)
            # The sampler counts an evicted trace when its decision falls due, not when it
            # evicts it: wait for that (make bench-collector's drain outlasts decision_wait).
            deadline, evicted = time.monotonic() + 60, 0
            while evicted < step.accepted - 100 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                evicted = own_drops(collector.ports.telemetry_url)[EVICTED]
            return step, evicted
        finally:
            collector.stop()
            await sink.server.stop(None)

    step, evicted = asyncio.run(run())
    assert step.accepted >= 512, step
    assert evicted == step.accepted - 100, step
    step.dropped = {EVICTED: evicted}
    assert step.dropped_text == f"{EVICTED} {evicted:,}"
