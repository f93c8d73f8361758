"""Process behaviour: hypercorn worker processes, graceful shutdown on SIGTERM, bad settings."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import httpx
import pytest

from tandem_localstack import Collector, PairPorts, Stack, loopback_url
from tandem_tracecheck import TempoClient
from tandem_tracecheck.scenarios import new_traceparent
from tandem_tracecheck.tree import match_tree, work_trace
from tests.support import Relay, free_port

pytestmark = pytest.mark.local_stack


def test_each_worker_process_exports_and_the_parent_exports_nothing(
    stack: Stack, collector: Collector
) -> None:
    pair = stack.start_pair(collector, suffix="-2p", gateway_env={"WEB_CONCURRENCY": "2"})
    gateway, worker = pair.gateway, pair.worker
    trace_ids = []
    with httpx.Client(timeout=30) as client:
        for _ in range(12):
            # A new connection each time, so both processes get requests.
            response = client.get(
                f"{pair.gateway_url}/api/work",
                params={"tasks": 1},
                headers={"connection": "close"},
            )
            assert response.status_code == 200
            trace_ids.append(response.json()["trace_id"])
    # Stopped, every process has flushed: the collector holds all their spans, and no more come.
    assert gateway.stop() == 0
    assert worker.stop() == 0
    pids = set()
    with TempoClient(collector.tempo_url) as tempo:
        for trace_id in trace_ids:
            spans = tempo.wait_for_trace(trace_id, spans=7, timeout=20, settle=0.2)
            # Each process serves both listeners: every quota check arrived on the internal one.
            expected = work_trace(1, caller=False, internal_port=pair.ports.gateway_internal)
            assert match_tree(spans, expected) == []
            pids |= {s.resource["process.pid"] for s in spans if s.service == "gateway"}
    assert gateway.popen.pid not in pids, "hypercorn's parent process exported spans"
    assert 1 <= len(pids) <= 2


@pytest.mark.parametrize("service", ["gateway", "worker"])
def test_sigterm_finishes_in_flight_requests_then_flushes(
    stack: Stack, collector: Collector, service: str
) -> None:
    # Spans wait 60 s in the batch queue: only the shutdown flush can deliver them in time.
    slow_export = {"OTEL_BSP_SCHEDULE_DELAY": "60000"}
    # The worker's quota calls wait at the relay: the request is then in flight in both services.
    ports = PairPorts.free()
    quota = Relay(loopback_url(ports.gateway_internal), hold=True)
    pair = stack.start_pair(
        collector,
        ports,
        suffix=f"-term-{service}",
        gateway_env=slow_export,
        worker_env={**slow_export, "GATEWAY_INTERNAL_URL": quota.url},
    )
    gateway, worker = pair.gateway, pair.worker
    target = {"gateway": gateway, "worker": worker}[service]
    traceparent, trace_id, span_id = new_traceparent()
    with quota, concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            httpx.get,
            f"{pair.gateway_url}/api/work",
            params={"tasks": 2},
            headers={"traceparent": traceparent},
            timeout=30,
        )
        assert quota.arrived.wait(30), "the worker never asked for its quota"
        target.popen.send_signal(signal.SIGTERM)
        quota.release()
        response = pending.result()
    # A draining gateway still answers the worker's quota calls on its internal listener.
    assert response.status_code == 200, response.text
    assert target.popen.wait(15) == 0
    other = worker if target is gateway else gateway
    assert other.stop() == 0
    # Both exited: whatever their flushes delivered is in the collector; nothing more will come.
    with TempoClient(collector.tempo_url) as tempo:
        spans = tempo.wait_for_trace(trace_id, spans=13, timeout=20)
    expected = work_trace(2, internal_port=pair.ports.gateway_internal)
    assert match_tree(spans, expected, root_parent=span_id) == []


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        ("gateway", "PORT", "http"),  # tandem_service's server settings
        ("gateway", "WORKER_TIMEOUT", "nan"),  # the gateway's own
        ("worker", "TANDEM_UNTRUSTED_CONTEXT", "maybe"),  # tandem_telemetry's
    ],
)
def test_a_malformed_setting_stops_the_service_with_a_line_naming_it(
    stack: Stack, service: str, variable: str, value: str
) -> None:
    # Every port free, the gateway's internal one too: only the bad setting can stop it.
    env = {"HOST": "127.0.0.1", "PORT": str(free_port()), variable: value}
    if service == "gateway":
        env["INTERNAL_PORT"] = str(free_port())
    process = stack.start(f"{service}-bad-{variable.lower()}", service, env)
    assert process.popen.wait(30) != 0
    output = process.output()
    assert f"{variable}={value!r}" in output, output
    assert "Traceback" not in output, output


def test_two_listeners_on_one_port_stop_the_gateway_with_a_line_naming_them(stack: Stack) -> None:
    """With WEB_CONCURRENCY > 1 the sockets share their port, so bind() would not refuse:
    one port would serve both apps. The settings refuse it first."""
    port = str(free_port())
    env = {"HOST": "127.0.0.1", "PORT": port, "INTERNAL_PORT": port, "WEB_CONCURRENCY": "2"}
    process = stack.start("gateway-one-port", "gateway", env)
    assert process.popen.wait(30) != 0
    output = process.output()
    assert f"INTERNAL_PORT={port} is also PORT" in output, output
    assert "Traceback" not in output, output


TWO_APPS = """
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

VERSION = {version!r}


def make(name):
    async def hello(request):
        return PlainTextResponse(f"{{name}} {{VERSION}} {{os.getpid()}}")

    return Starlette(routes=[Route("/", hello)])


public, internal = make("public"), make("internal")
"""
SERVE_TWO = """
from tandem_service import Listener, serve

listeners = {Listener.public(8000): "public", Listener("SECOND_PORT", 8001): "internal"}
# Spawned children import this module again (as __mp_main__): only the parent serves.
if __name__ == "__main__":
    raise SystemExit(serve({listener: f"two_apps:{app}" for listener, app in listeners.items()}))
"""


@pytest.mark.parametrize("reload", [False, True], ids=["web-concurrency-2", "reload"])
def test_every_serving_process_serves_every_listener(stack: Stack, tmp_path, reload: bool) -> None:
    """tandem_service.serve with two listeners, in the two modes that spawn processes: each
    process serves both; RELOAD=true restarts them, both listeners included, on a change."""
    source = tmp_path / "two_apps.py"
    source.write_text(TWO_APPS.format(version="one"))
    (tmp_path / "serve_two.py").write_text(SERVE_TWO)
    public, second = free_port(), free_port()
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(public),
        "SECOND_PORT": str(second),
        "PYTHONPATH": str(tmp_path),
        "OTEL_SDK_DISABLED": "true",
        **({"RELOAD": "true"} if reload else {"WEB_CONCURRENCY": "2"}),
    }
    process = stack.start(f"two-listeners-{'reload' if reload else 'wc2'}", "serve_two", env)

    pids: set[int] = set()

    def answers(version: str) -> bool:
        """Whether both listeners answer with `version` now, each with its own app."""
        try:
            bodies = [
                httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text.split()
                for port in (public, second)
            ]
        except httpx.TransportError:
            return False
        pids.update(int(body[2]) for body in bodies)
        return [body[:2] for body in bodies] == [["public", version], ["internal", version]]

    def wait_until(version: str) -> None:
        deadline = time.monotonic() + 30
        while not answers(version):
            assert process.popen.poll() is None, process.output()
            assert time.monotonic() < deadline, f"never answered {version!r}:\n{process.output()}"
            time.sleep(0.1)

    wait_until("one")
    if reload:
        source.write_text(TWO_APPS.format(version="two"))
        # A later mtime whatever the file system's timestamp granularity.
        later = source.stat().st_mtime + 5
        os.utime(source, (later, later))
        wait_until("two")
    # Both modes serve from spawned processes; the parent only supervises them.
    assert pids and process.popen.pid not in pids
    process.popen.send_signal(signal.SIGTERM)
    assert process.popen.wait(30) == 0, process.output()
