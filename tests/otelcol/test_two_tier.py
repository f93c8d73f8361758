"""collector.topology=two-tier in real Collectors, on loopback: 2 agents and 3 gateway-tier
Collectors running the configs the chart renders (tests/k8s/values/two-tier.yaml), only
environment values differing: loopback ports, the static resolver in place of the k8s one
(OTELCOL_LB_RESOLVER), and a shorter decision_wait (the services here export every 200 ms,
not every 5 s). The gateway exports to one agent and the worker to the other, so every
trace's spans enter through both and meet only if the agents route them by trace id.

A known mix (failing, slow, ordinary) must come out as the policies say: every kept trace
whole, every failing and slow trace kept, the ordinary ones kept at the configured ratio
(within a binomial bound), and span metrics counting every request, kept or not. Then a
scale event: one gateway-tier Collector stopped mid-run and started again."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tandem_localstack import (
    Collector,
    OtelcolPorts,
    Pair,
    Process,
    Stack,
)
from tandem_tracecheck.tempo import TempoClient
from tandem_tracecheck.tree import Expect, check_tree, work_trace, worker_failure_trace
from tests.k8s.conftest import Rendered
from tests.otelcol.conftest import collector_configs, gateway_tier_configs
from tests.prometheus import (
    COLLECTOR_METRICS_JOB,
    COLLECTOR_TELEMETRY_JOB,
    Prometheus,
    start_prometheus,
)

VALUE_SET = "two-tier"
AGENTS = 2
GATEWAY_TIER = 3
# What the test sets through the gateway tier's environment (the chart: gatewayTier.sampling).
# A trace's spans reach the tier within ~1.5 s of its end here (SDK 200 ms, agent batch 1 s).
DECISION_WAIT_S = 5
LATENCY_THRESHOLD_MS = 1000
PERCENTAGE = 25
# The mix: ordinary requests (tasks=1), failing ones (fail=worker), slow ones (the worker
# waits SLOW_DELAY_MS, past the threshold).
ORDINARY = 240
FAILING = 24
SLOW = 8
SLOW_DELAY_MS = 1300
# Bounds on waits: decisions come DECISION_WAIT_S after a trace's first span, exports within
# a second; a span metrics flush every 15 s and a scrape; a restarted backend's spans wait
# for the agents' retry backoff (up to 30 s).
DECIDED_WITHIN = 90.0
METRICS_WITHIN = 120.0
# Longer than the batch timeout (1 s) and a scrape (1 s).
SETTLE_S = 4.0
# |kept - n p| stays under Z standard deviations but with probability ~1e-5.
Z = 4.4


@dataclass
class Sent:
    """Trace ids of the requests sent, by kind, and (ordinary ones) how long each took."""

    ordinary: dict[str, float] = field(default_factory=dict)
    failing: list[str] = field(default_factory=list)
    slow: list[str] = field(default_factory=list)


@dataclass
class Tier:
    stack: Stack
    binary: Path
    config: Path
    store: Collector
    ports: list[OtelcolPorts]
    env: dict[str, str]

    def start(self, index: int) -> Collector:
        return self.stack.start_otelcol(
            self.binary,
            self.config,
            self.store,
            self.ports[index],
            name=f"gateway-tier-{index}-{time.monotonic_ns()}",
            env=self.env,
        )

    def process(self, index: int) -> Process:
        """The running process of gateway-tier Collector `index` (the latest started)."""
        prefix = f"gateway-tier-{index}-"
        running = [p for p in self.stack.processes if p.name.startswith(prefix)]
        return running[-1]


@pytest.fixture(scope="module")
def configs(rendered: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The two configs the chart renders for two-tier, written as the pods mount them."""
    folder = tmp_path_factory.mktemp("two-tier-configs")
    agent, tier = folder / "otelcol-agent.yaml", folder / "otelcol-gateway.yaml"
    agent.write_text(collector_configs(rendered)[VALUE_SET])
    tier.write_text(gateway_tier_configs(rendered)[VALUE_SET])
    return {"agent": agent, "tier": tier}


@pytest.fixture(scope="module")
def tier(stack: Stack, store: Collector, otelcol: Path, configs: dict) -> Tier:
    env = {
        "OTELCOL_TAIL_DECISION_WAIT": f"{DECISION_WAIT_S}s",
        "OTELCOL_TAIL_NUM_TRACES": "100000",
        "OTELCOL_TAIL_LATENCY_THRESHOLD_MS": str(LATENCY_THRESHOLD_MS),
        "OTELCOL_TAIL_SAMPLING_PERCENTAGE": str(PERCENTAGE),
    }
    ports = [OtelcolPorts.free() for _ in range(GATEWAY_TIER)]
    tier = Tier(stack, otelcol, configs["tier"], store, ports, env)
    for index in range(GATEWAY_TIER):
        tier.start(index)
    return tier


@pytest.fixture(scope="module")
def agents(stack: Stack, store: Collector, otelcol: Path, configs: dict, tier: Tier) -> list:
    # The static resolver in place of the chart's k8s one: the same block, from the env.
    hostnames = [f"127.0.0.1:{ports.grpc}" for ports in tier.ports]
    resolver = json.dumps({"static": {"hostnames": hostnames}})
    out = []
    for index in range(AGENTS):
        ports = OtelcolPorts.free()
        collector = stack.start_otelcol(
            otelcol,
            configs["agent"],
            store,
            ports,
            name=f"agent-{index}",
            env={"OTELCOL_LB_RESOLVER": resolver},
        )
        out.append((collector, ports))
    return out


@pytest.fixture(scope="module")
def prom(
    stack: Stack,
    prometheus_bin: Path,
    tier: Tier,
    agents: list,
    tmp_path_factory: pytest.TempPathFactory,
) -> Prometheus:
    """The chart's two Collector jobs over both tiers (its Prometheus scrapes both)."""
    all_ports = [*tier.ports, *(ports for _, ports in agents)]
    scrape = [
        {
            "job_name": COLLECTOR_METRICS_JOB,
            "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{p.prometheus}" for p in all_ports]}],
        },
        {
            "job_name": COLLECTOR_TELEMETRY_JOB,
            "static_configs": [{"targets": [f"127.0.0.1:{p.telemetry}" for p in all_ports]}],
        },
    ]
    server = start_prometheus(
        stack, tmp_path_factory.mktemp("prometheus"), scrape, binary=prometheus_bin
    )
    server.wait_for_targets()
    return server


@pytest.fixture(scope="module")
def pair(stack: Stack, agents: list) -> Pair:
    (first, _), (second, _) = agents
    # The worker exports to the other agent: one trace, two entry points.
    return stack.start_pair(first, worker_env={"OTEL_EXPORTER_OTLP_ENDPOINT": second.grpc_endpoint})


def ordinary(gateway: httpx.Client) -> tuple[str, float]:
    started = time.monotonic()
    response = gateway.get("/api/work", params={"tasks": 1})
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    return response.json()["trace_id"], took


def failing(gateway: httpx.Client) -> str:
    response = gateway.get("/api/work", params={"tasks": 1, "fail": "worker"})
    assert response.status_code == 502, response.text
    return str(response.json()["trace_id"])


def slow(gateway: httpx.Client) -> str:
    response = gateway.get("/api/work", params={"tasks": 1, "delay_ms": SLOW_DELAY_MS})
    assert response.status_code == 200, response.text
    return str(response.json()["trace_id"])


@pytest.fixture(scope="module")
def sent(pair: Pair, prom: Prometheus) -> Sent:
    """The steady run: ordinary requests with failing and slow ones spread among them."""
    out = Sent()
    with (
        httpx.Client(base_url=pair.gateway_url, timeout=30) as gateway,
        ThreadPoolExecutor(SLOW) as pool,
    ):
        slow_futures = [pool.submit(slow, gateway) for _ in range(SLOW)]
        every = ORDINARY // FAILING
        for i in range(ORDINARY):
            trace_id, took = ordinary(gateway)
            out.ordinary[trace_id] = took
            if i % every == every - 1:
                out.failing.append(failing(gateway))
        out.slow = [f.result() for f in slow_futures]
    return out


def telemetry(name: str, labels: str = "") -> str:
    """A sum over the Collectors' own telemetry (counters may carry `_total` or not)."""
    return f'sum({{__name__=~"{name}(_total)?",job="{COLLECTOR_TELEMETRY_JOB}"{labels}}})'


def wait_decided_and_exported(prom: Prometheus, tier: Tier, traces: int) -> None:
    """Until the gateway tier has decided `traces` traces, and its exports to the store have
    settled: the spans it sent unchanged for SETTLE_S, past the batch timeout (1 s) after
    the last decision (its own telemetry, summed over the tier)."""
    instances = "|".join(f"127.0.0.1:{p.telemetry}" for p in tier.ports)
    prom.wait_until(
        telemetry("otelcol_processor_tail_sampling_global_count_traces_sampled"),
        lambda samples: bool(samples) and samples[0][1] >= traces,
        timeout=DECIDED_WITHIN,
        what=f"{traces} traces decided",
    )
    sent = telemetry(
        "otelcol_exporter_sent_spans", f',exporter="otlp_grpc/tempo",instance=~"{instances}"'
    )
    deadline = time.monotonic() + DECIDED_WITHIN
    last, since = None, time.monotonic()
    while True:
        value = prom.value(sent)
        if value != last:
            last, since = value, time.monotonic()
        elif value and time.monotonic() - since >= SETTLE_S:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the gateway tier's exports did not settle: {sent} = {value}")
        time.sleep(0.25)


def fetch(tempo: TempoClient, trace_id: str, expected: Expect, timeout: float) -> list:
    return tempo.wait_for_trace(trace_id, spans=expected.size(), timeout=timeout, settle=1.0)


def problems(spans: list, expected: Expect, trace_id: str) -> list[str]:
    return check_tree(spans, expected, root_parent=None, trace_id=trace_id).problems


@pytest.fixture(scope="module")
def kept(sent: Sent, prom: Prometheus, store: Collector, tier: Tier) -> dict[str, list]:
    """Every trace of the steady run as the store holds it, once all are decided."""
    wait_decided_and_exported(prom, tier, len(sent.ordinary) + len(sent.failing) + len(sent.slow))
    # Decided and sent: what the store lacks now was dropped by policy.
    with TempoClient(store.tempo_url) as tempo:
        return {t: tempo.trace(t) for t in [*sent.failing, *sent.slow, *sent.ordinary]}


def test_every_failing_and_slow_trace_is_kept_whole(sent: Sent, kept: dict, pair: Pair) -> None:
    assert len(sent.failing) == FAILING and len(sent.slow) == SLOW
    for trace_id in sent.failing:
        assert problems(kept[trace_id], worker_failure_trace(caller=False), trace_id) == []
    for trace_id in sent.slow:
        expected = work_trace(1, caller=False, internal_port=pair.ports.gateway_internal)
        assert problems(kept[trace_id], expected, trace_id) == []


def test_every_kept_ordinary_trace_is_whole(sent: Sent, kept: dict, pair: Pair) -> None:
    expected = work_trace(1, caller=False, internal_port=pair.ports.gateway_internal)
    kept_ids = [t for t in sent.ordinary if kept[t]]
    assert kept_ids, "no ordinary trace kept"
    broken = {t: problems(kept[t], expected, t) for t in kept_ids}
    assert {t: p for t, p in broken.items() if p} == {}


def test_ordinary_traces_are_kept_at_the_configured_ratio(sent: Sent, kept: dict) -> None:
    """Within a binomial bound. An ordinary request that took the threshold itself (a busy
    machine) is a slow trace by the policy's measure, so it is left out of the count."""
    quick = [t for t, took in sent.ordinary.items() if took * 1000 < LATENCY_THRESHOLD_MS]
    assert len(quick) >= ORDINARY * 0.9, f"only {len(quick)} of {ORDINARY} ordinary were quick"
    n, k, p = len(quick), sum(1 for t in quick if kept[t]), PERCENTAGE / 100
    bound = Z * math.sqrt(n * p * (1 - p))
    print(f"\ntwo-tier: ordinary traces kept {k} of {n} ({k / n:.1%}; configured {p:.0%})")
    assert abs(k - n * p) <= bound, (k, n, p, bound)


def test_span_metrics_count_every_request_sampled_or_not(
    prom: Prometheus, sent: Sent, tier: Tier
) -> None:
    requests = len(sent.ordinary) + len(sent.failing) + len(sent.slow)
    selector = (
        'service_name="gateway",span_kind="SPAN_KIND_SERVER",span_name="GET /api/work",'
        'job="tandem/gateway"'
    )
    prom.wait_for_value(
        f"sum(traces_span_metrics_calls_total{{{selector}}})", requests, timeout=METRICS_WITHIN
    )
    errors = f'{selector},status_code="STATUS_CODE_ERROR"'
    prom.wait_for_value(
        f"sum(traces_span_metrics_calls_total{{{errors}}})", FAILING, timeout=METRICS_WITHIN
    )
    # Each gateway-tier Collector took a share: the agents spread the traces over all three
    # (the span metrics' instance label is the service's, so the Collectors' own telemetry).
    instances = "|".join(f"127.0.0.1:{p.telemetry}" for p in tier.ports)
    accepted = prom.query(
        f'sum by (instance) ({{__name__=~"otelcol_receiver_accepted_spans(_total)?",'
        f'job="{COLLECTOR_TELEMETRY_JOB}",instance=~"{instances}"}})'
    )
    assert len(accepted) == GATEWAY_TIER and all(v > 0 for _, v in accepted), accepted


@dataclass
class ScaleRun:
    before: list[str] = field(default_factory=list)  # failing, sent before the stop
    during: list[str] = field(default_factory=list)  # failing, while one was down
    after: list[str] = field(default_factory=list)  # failing, once it was back
    ordinary: list[str] = field(default_factory=list)


def test_a_gateway_tier_collector_stopped_and_restarted_mid_run(
    tier: Tier,
    pair: Pair,
    store: Collector,
    sent: Sent,
    kept: dict,
) -> None:
    """Runs after the steady checks (it resets one Collector's counters). Traffic never
    stops; one gateway-tier Collector is stopped (SIGTERM) and started again on its ports.
    Failing traces sent once it is back are all whole; what broke before is reported."""
    run = ScaleRun()
    phase = ["before"]
    stop = threading.Event()
    errors: list[BaseException] = []

    def traffic() -> None:
        try:
            with httpx.Client(base_url=pair.gateway_url, timeout=30) as gateway:
                i = 0
                while not stop.is_set():
                    run.ordinary.append(ordinary(gateway)[0])
                    if i % 3 == 0:
                        getattr(run, phase[0]).append(failing(gateway))
                    i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        wait_for(lambda: len(run.before) >= 15, "15 failing traces before the stop")
        phase[0] = "during"
        exit_code = tier.process(1).stop()
        assert exit_code == 0
        wait_for(lambda: len(run.during) >= 15, "15 failing traces while it was down")
        tier.start(1)  # returns once its health check answers
        phase[0] = "after"
        wait_for(lambda: len(run.after) >= 15, "15 failing traces after the restart")
    finally:
        stop.set()
        sender.join(60)
    assert errors == []
    expected = worker_failure_trace(caller=False)
    outcome: dict[str, dict[str, int]] = {}
    broken_after = {}
    with TempoClient(store.tempo_url) as tempo:
        for name in ("before", "during", "after"):
            counts = {"whole": 0, "broken": 0, "lost": 0}
            for trace_id in getattr(run, name):
                spans = fetch(tempo, trace_id, expected, DECIDED_WITHIN)
                found = problems(spans, expected, trace_id) if spans else ["lost"]
                key = "whole" if not found else ("lost" if not spans else "broken")
                counts[key] += 1
                if name == "after" and found:
                    broken_after[trace_id] = found
            outcome[name] = counts
    print(f"\ntwo-tier scale event, failing traces by when they were sent: {outcome}")
    assert broken_after == {}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
