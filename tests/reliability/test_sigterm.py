"""SIGTERM under load: in-flight requests complete, every span of every completed request
arrives, exit is within the grace period."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest

from tandem_collector.localstack import Collector, Stack
from tests.reliability import report
from tests.reliability.load import LoadResult, answered, drive, incomplete_traces
from tests.support import free_port

GRACEFUL_TIMEOUT = 10
SHUTDOWN_TIMEOUT = 3  # TANDEM_SHUTDOWN_TIMEOUT: the telemetry flush's own bound
SPANS_PER_REQUEST = 13  # 1 + 6N with N = 2


@pytest.mark.parametrize("service", ["gateway", "worker"])
def test_sigterm_during_load(stack: Stack, collector: Collector, service: str) -> None:
    gateway_port, worker_port = free_port(), free_port()
    # Spans are exported every 60 s unless a batch fills: the flush on exit must carry the rest.
    env = {
        "GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT),
        "TANDEM_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
    }
    worker = stack.start_service(
        "worker", worker_port, collector, GATEWAY_URL=f"http://127.0.0.1:{gateway_port}", **env
    )
    gateway = stack.start_service(
        "gateway", gateway_port, collector, WORKER_URL=f"http://127.0.0.1:{worker_port}", **env
    )
    target, other = (gateway, worker) if service == "gateway" else (worker, gateway)
    rss_before = report.rss_mb(target.popen.pid)
    stopping = False
    live = LoadResult()

    async def scenario():
        nonlocal stopping
        load = asyncio.create_task(
            drive(
                f"http://127.0.0.1:{gateway_port}/api/work?tasks=2&delay_ms=100",
                concurrency=8,
                duration=60,
                keep_going=lambda: not stopping,
                result=live,
            )
        )
        await answered(live, 20, load)
        # As a load balancer would: the signal goes out, and new requests stop arriving; those
        # in flight must finish.
        target.popen.send_signal(signal.SIGTERM)
        stopping = True
        return await load

    result = asyncio.run(scenario())
    try:
        exit_code = target.popen.wait(GRACEFUL_TIMEOUT + SHUTDOWN_TIMEOUT + 2)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"{service} did not exit within its grace period of "
            f"{GRACEFUL_TIMEOUT + SHUTDOWN_TIMEOUT} s"
        )
    assert exit_code == 0, target.output()[-2000:]
    assert other.stop() == 0
    assert result.failures == 0, result.errors[:5] + [s for s in result.statuses if s != 200][:5]
    assert result.requests > 20, "the load never got going"

    incomplete = incomplete_traces(
        collector.tempo_url, [t for _, t in result.traces], SPANS_PER_REQUEST, timeout=10
    )
    received = len(result.traces) * SPANS_PER_REQUEST - sum(
        SPANS_PER_REQUEST - found for _, found in incomplete
    )
    expected = len(result.traces) * SPANS_PER_REQUEST
    report.record(
        report.Row(
            f"SIGTERM to the {service} during load",
            "/api/work?tasks=2&delay_ms=100, 8 concurrent; SIGTERM after 20 answers, then no new "
            "requests",
            result.requests,
            result.failures,
            expected,
            received,
            None,
            rss_before,
            None,
            f"exit code {exit_code}",
        )
    )
    assert incomplete == [], f"{len(incomplete)} traces incomplete, e.g. {incomplete[:3]}"
