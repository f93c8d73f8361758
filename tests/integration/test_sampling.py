"""tracecheck under head sampling: it passes whatever the services' sampler keeps, and proves
what it cannot see by events (a later sampled trace stored whole), not by waiting.

Each stack here runs both services with the sampler under test, as the chart's
telemetry.tracesSampler and telemetry.tracesSamplerArg set it for both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tandem_localstack import Stack, free_collector_ports
from tandem_tracecheck import TempoClient
from tandem_tracecheck.__main__ import main
from tandem_tracecheck.scenarios import (
    ALL,
    SAMPLED,
    CheckedNewTrace,
    CheckFailed,
    Target,
    linked_tree,
    new_trace_without_traceparent,
    worker_failure_is_an_error_chain,
)

pytestmark = pytest.mark.local_stack

# Keeps about a third of new traces: both outcomes come up within a few requests.
RATIO = "0.3"
# Runs of the new-trace check until enough unsampled traces were proven empty. Each run sees
# (1 - p) / p = 2.3 unsampled traces on average; 20 runs with fewer than 3 in all do not happen.
MAX_RUNS = 20
ENOUGH_UNSAMPLED = 3


def sampled_stack(logdir: Path, name: str, **sampler: str) -> tuple[Stack, Target]:
    """A collector, and a worker and a gateway both sampling with `sampler` (OTEL_* vars)."""
    stack = Stack(logdir)
    collector = stack.start_collector(free_collector_ports(), name=f"collector-{name}")
    pair = stack.start_pair(collector, suffix=f"-{name}", gateway_env=sampler, worker_env=sampler)
    target = Target(
        pair.gateway_url,
        collector.tempo_url,
        collector.metrics_url,
        trace_timeout=20,
        gateway_internal_port=pair.ports.gateway_internal,
    )
    return stack, target


@pytest.fixture(scope="module")
def ratio_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    stack, target = sampled_stack(
        tmp_path_factory.mktemp("stack-ratio"),
        "ratio",
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG=RATIO,
    )
    try:
        yield target
    finally:
        stack.stop_all()


@pytest.fixture(scope="module")
def always_off_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """Not parent-based: the services drop every trace, even one the caller sampled."""
    stack, target = sampled_stack(
        tmp_path_factory.mktemp("stack-off"), "off", OTEL_TRACES_SAMPLER="always_off"
    )
    try:
        yield target
    finally:
        stack.stop_all()


def test_tracecheck_passes_under_a_ratio_sampler(
    ratio_target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m tandem_tracecheck`, as helm test and make e2e run it."""
    code = main(
        [
            f"--gateway-url={ratio_target.gateway_url}",
            f"--tempo-url={ratio_target.tempo_url}",
            f"--metrics-url={ratio_target.metrics_url}",
            f"--gateway-internal-port={ratio_target.gateway_internal_port}",
            "--trace-timeout=20",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{len(ALL)} passed, 0 failed" in out
    assert "ok   new trace without traceparent" in out and "verified empty" in out, out


def test_new_trace_check_matches_a_sampled_tree_and_proves_unsampled_traces_empty(
    ratio_target: Target,
) -> None:
    runs: list[CheckedNewTrace] = []
    while sum(len(run.unsampled) for run in runs) < ENOUGH_UNSAMPLED:
        assert len(runs) < MAX_RUNS, f"only {[len(r.unsampled) for r in runs]} unsampled"
        runs.append(new_trace_without_traceparent(ratio_target))
    with TempoClient(ratio_target.tempo_url) as tempo:
        for run in runs:
            assert run.probes == len(run.unsampled) + 1
            assert run.trace_id not in run.unsampled
            # The sampled tree was matched whole: gateway -> worker -> gateway's internal port.
            assert run.match.links_by_structure == 2, run
            assert f"sampled at probe {run.probes}" in str(run)
            assert f"{len(run.unsampled)} unsampled traces verified empty" in str(run)
            # The check's own verdict, seen again from here: nothing stored for them.
            assert all(tempo.trace(trace_id) == [] for trace_id in run.unsampled)
            assert len(tempo.trace(run.trace_id)) == 7


class MislabellingProxy:
    """A gateway in front of the real one that labels its first answer unsampled (traceresponse
    sampled bit clear) although the trace was sampled and stored: what a sampler bug would
    look like."""

    def __init__(self, upstream: str) -> None:
        self.mislabelled: list[str] = []
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                forward = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                answer = httpx.get(upstream + self.path, headers=forward, timeout=30)
                version, trace_id, span_id, flags = answer.headers["traceresponse"].split("-")
                with lock:
                    if not proxy.mislabelled and int(flags, 16) & SAMPLED:
                        proxy.mislabelled.append(trace_id)
                        # Only the sampled bit: the others (0x02, random trace id) stay.
                        flags = f"{int(flags, 16) & ~SAMPLED:02x}"
                traceresponse = f"{version}-{trace_id}-{span_id}-{flags}"
                self.send_response(answer.status_code)
                self.send_header("content-type", answer.headers.get("content-type", ""))
                self.send_header("traceresponse", traceresponse)
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_unsampled_trace_with_stored_spans_fails_the_check(target: Target) -> None:
    """The absence check can fail: a trace answered as unsampled whose spans are stored."""
    proxy = MislabellingProxy(target.gateway_url)
    try:
        with pytest.raises(CheckFailed) as failure:
            new_trace_without_traceparent(
                Target(
                    proxy.url,
                    target.tempo_url,
                    target.metrics_url,
                    trace_timeout=target.trace_timeout,
                    gateway_internal_port=target.gateway_internal_port,
                )
            )
    finally:
        proxy.close()
    (mislabelled,) = proxy.mislabelled
    assert f"unsampled trace {mislabelled} has 7 spans stored" in str(failure.value)
    assert "sampled at probe 2" in str(failure.value)


def test_a_sampler_that_drops_the_callers_sampled_traces_is_named(
    always_off_target: Target,
) -> None:
    """Not parent-based, the gateway answers flags 00 to a sampled traceparent: the checks say
    so at once instead of waiting for a trace that is never stored."""
    for check in (lambda t: linked_tree(t, 1), worker_failure_is_an_error_chain):
        with pytest.raises(CheckFailed, match="the sampler is not parent-based"):
            check(always_off_target)
    few = Target(
        always_off_target.gateway_url,
        always_off_target.tempo_url,
        always_off_target.metrics_url,
        new_trace_probes=5,
    )
    with pytest.raises(CheckFailed, match="none sampled in 5 requests without a traceparent"):
        new_trace_without_traceparent(few)
