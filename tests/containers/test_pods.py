"""The chart's pods, run from the built images: `helm test`, the probes, the gateway's two
listeners, B3 propagation, a read-only root, and a stop under load."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest

from tandem_localstack import Collector
from tandem_tracecheck import TempoClient
from tandem_tracecheck.tree import match_tree, work_trace
from tests.containers.conftest import APPS, B3_PROPAGATORS, Pods, http_status, report
from tests.containers.podspec import PodRun
from tests.reliability.load import LoadResult, answered, drive, incomplete_traces
from tests.reliability.test_malformed_input import raw_trace, root_span, wait_for_traces
from tests.support import Relay, free_port

SPANS_PER_REQUEST = 13  # 1 + 6N with N = 2
# What a read-only root filesystem says when a process tries to write to it.
READ_ONLY_ERRORS = ("Read-only file system", "EROFS", "[Errno 30]")


def test_helm_test_pod_passes(pods: Pods, running: dict[str, PodRun]) -> None:
    """The `helm test` pod, from its rendered spec: the span tree (the quota checks on the
    gateway's internal port), the error chain, baggage and metrics."""
    run = pods.spec("tracecheck")
    pods.engine("rm", "--force", run.pod_name, check=False)
    proc = pods.engine("run", *run.run_args, check=False, timeout=600)
    pods.engine("rm", "--force", run.pod_name, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    summary = output.strip().splitlines()[-1]
    assert summary.endswith(" failed") and " 0 failed" in summary, output
    report(f"helm test pod: {summary}")


@pytest.mark.parametrize("app", APPS)
def test_probes_answer(pods: Pods, running: dict[str, PodRun], app: str) -> None:
    """Each probe the chart declares answers 200 where the kubelet would call it."""
    run = running[app]
    assert set(run.probes) == {"startupProbe", "livenessProbe", "readinessProbe"}
    for kind, probe in run.probes.items():
        assert http_status(f"http://127.0.0.1:{probe.port}{probe.path}") == 200, (
            f"{app} {kind} {probe}"
        )


def _ports(run: PodRun) -> tuple[str, str]:
    """The gateway pod's public and internal base URLs, from its named container ports."""
    return f"http://127.0.0.1:{run.ports['http']}", f"http://127.0.0.1:{run.ports['internal']}"


def test_each_gateway_listener_serves_only_its_own_routes(running: dict[str, PodRun]) -> None:
    """The chart's gateway: `/internal/quota` on the `internal` port only, a JSON 404 on the
    public one; `/api/work` and the health routes on the public port only."""
    public, internal = _ports(running["gateway"])
    with httpx.Client(timeout=15) as client:
        for base, route, status in (
            (public, "/internal/quota?task=1", 404),
            (internal, "/api/work?tasks=1", 404),
            (internal, "/readyz", 404),
            (internal, "/internal/quota?task=1", 200),
            (public, "/api/work?tasks=1", 200),
        ):
            response = client.get(f"{base}{route}")
            assert response.status_code == status, (base, route, response.text)
            if status == 404:
                assert response.json()["error"] == "not_found", response.text
    report("gateway listeners: each answers only its own routes (JSON 404 for the other's)")


# Outside callers: one asks the public port for the internal route, one calls /api/work.
PROBE = ("aaaabbbbccccddddeeeeffff00001111", "1111222233334444")
CALLER = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
TASKS = 2


def test_an_edge_gateway_trusts_the_listener_not_the_path(
    pods: Pods,
    running: dict[str, PodRun],
    untrusted_chart: dict[str, dict[str, Any]],
    stand_in: Collector,
) -> None:
    """The gateway pod rendered with gateway.untrustedContext=true, in place of the default one
    (the same ports and Service names), the chart's worker calling it back through
    tandem-gateway-internal: `/internal/quota` on the public port is a 404 that takes no quota
    and puts no span in the caller's trace; `/api/work` with an outside traceparent starts a
    new trace linked to the caller, and the worker's quota checks arrive on the internal port
    inside it: 1 + 6N spans."""
    edge = pods.spec("gateway", workload=untrusted_chart["gateway"], name_suffix="-edge")
    assert edge.env["TANDEM_UNTRUSTED_CONTEXT"] == "true"
    pods.engine(
        "stop", "--time", str(running["gateway"].grace_seconds), running["gateway"].pod_name
    )
    try:
        pods.start(edge)
        public, internal = _ports(edge)
        with httpx.Client(timeout=30) as client:

            def granted() -> int:
                response = client.get(f"{internal}/internal/quota?task=1")
                assert response.status_code == 200, response.text
                return int(response.json()["granted"])

            before = granted()
            probe = client.get(
                f"{public}/internal/quota?task=5",
                headers={"traceparent": f"00-{PROBE[0]}-{PROBE[1]}-01", "baggage": "user=admin"},
            )
            assert probe.status_code == 404 and probe.json()["error"] == "not_found", probe.text
            assert granted() == before + 1, "/internal/quota on the public port took quota"
            work = client.get(
                f"{public}/api/work",
                params={"tasks": TASKS},
                headers={"traceparent": f"00-{CALLER[0]}-{CALLER[1]}-01"},
            )
        assert work.status_code == 200, work.text
        probe_trace = probe.headers["traceresponse"].split("-")[1]
        work_trace = work.json()["trace_id"]
        assert PROBE[0] != probe_trace and CALLER[0] != work_trace
        traces = wait_for_traces(
            stand_in.tempo_url, {probe_trace: 1, work_trace: 1 + 6 * TASKS}, timeout=60
        )
        # The probe's one span has arrived, in a trace of its own: nothing joined the caller's.
        (probe_span,) = traces[probe_trace]
        assert probe_span["attributes"]["http.response.status_code"] == 404
        assert [(link["traceId"], link["spanId"]) for link in probe_span["links"]] == [PROBE]
        assert raw_trace(stand_in.tempo_url, PROBE[0]) == []
        spans = traces[work_trace]
        assert len(spans) == 1 + 6 * TASKS, [(s["service"], s["name"]) for s in spans]
        root = root_span(spans)
        assert not root.get("parentSpanId")
        assert [(link["traceId"], link["spanId"]) for link in root["links"]] == [CALLER]
        quota = [s for s in spans if s["name"] == "GET /internal/quota"]
        worker_clients = {
            s["spanId"]
            for s in spans
            if s["service"] == "worker" and s["kind"] == "SPAN_KIND_CLIENT"
        }
        assert len(quota) == TASKS
        for span in quota:
            assert span["parentSpanId"] in worker_clients and not span["links"], span
            assert span["attributes"]["server.port"] == edge.ports["internal"], span
            assert span["attributes"]["server.address"].endswith("-gateway-internal"), span
    finally:
        pods.engine("rm", "--force", edge.pod_name, check=False)
    report(
        "edge gateway (gateway.untrustedContext=true): /internal/quota on the public port 404, "
        f"no quota, no span in the caller's trace; /api/work: a new linked trace of "
        f"{1 + 6 * TASKS} spans, quota on the internal port"
    )


def test_a_b3_caller_continues_through_both_pods(
    pods: Pods,
    running: dict[str, PodRun],
    b3_chart: dict[str, dict[str, Any]],
    stand_in: Collector,
) -> None:
    """The gateway and worker pods rendered with telemetry.propagators=[tracecontext, baggage,
    b3multi], in place of the default ones (the images ship the B3 propagators): a caller that
    sends only B3 headers continues its trace through the gateway, the worker and back. The
    traceresponse header, the body and the stored trace carry its trace id; the stored trace is
    the whole tree, under the caller's span; the worker's quota calls, through a relay, carry B3
    headers of that trace beside traceparent."""
    relay = Relay(f"http://127.0.0.1:{running['gateway'].ports['internal']}")
    b3 = {
        "worker": pods.spec(
            "worker",
            workload=b3_chart["worker"],
            name_suffix="-b3",
            env_overrides={"GATEWAY_INTERNAL_URL": relay.url},
        ),
        "gateway": pods.spec("gateway", workload=b3_chart["gateway"], name_suffix="-b3"),
    }
    try:
        for app, run in b3.items():
            assert run.env["OTEL_PROPAGATORS"] == ",".join(B3_PROPAGATORS), app
            pods.engine("stop", "--time", str(running[app].grace_seconds), running[app].pod_name)
            pods.start(run)
        trace_id, span_id = (
            f"{random.getrandbits(128) or 1:032x}",
            f"{random.getrandbits(64) or 1:016x}",
        )
        public, _ = _ports(b3["gateway"])
        response = httpx.get(
            f"{public}/api/work",
            params={"tasks": TASKS},
            headers={"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id, "X-B3-Sampled": "1"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.headers["traceresponse"].split("-")[1] == trace_id, response.headers
        assert response.json()["trace_id"] == trace_id
        wait_for_traces(stand_in.tempo_url, {trace_id: 1 + 6 * TASKS}, timeout=60)
        with TempoClient(stand_in.tempo_url) as tempo:
            spans = tempo.trace(trace_id)
        assert match_tree(spans, work_trace(TASKS), root_parent=span_id) == []
        assert len(relay.seen) == TASKS, relay.seen
        for headers in relay.seen:
            assert headers["traceparent"].split("-")[1] == trace_id, headers
            assert headers["x-b3-traceid"] == trace_id and headers["x-b3-sampled"] == "1", headers
    finally:
        for run in b3.values():
            pods.engine("rm", "--force", run.pod_name, check=False)
        relay.close()
    report(
        f"B3 pods (telemetry.propagators={list(B3_PROPAGATORS)}): a caller with only X-B3-* "
        f"headers continues its trace through both, {1 + 6 * TASKS} spans"
    )


@pytest.mark.parametrize("app", APPS)
def test_runs_as_the_chart_says(pods: Pods, running: dict[str, PodRun], app: str) -> None:
    """The securityContext holds inside the running container: user, group, capabilities,
    privileges, read-only root."""
    name = running[app].pod_name
    status = pods.engine("exec", name, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split()[:2] == ["10001", "10001"] and fields["Gid"].split()[:2] == [
        "10001",
        "10001",
    ]
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0, (
        "capabilities are not all dropped"
    )
    assert fields["NoNewPrivs"].strip() == "1"
    write = pods.engine("exec", name, "python", "-c", "open('/opt/venv/probe', 'w')", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    tmp = pods.engine(
        "exec", name, "python", "-c", "open('/tmp/probe', 'w').write('x')", check=False
    )
    assert tmp.returncode == 0, f"/tmp (the chart's emptyDir) is not writable: {tmp.stderr}"


def test_services_never_write_to_the_root(
    pods: Pods, running: dict[str, PodRun], stand_in: Collector
) -> None:
    """A twin of each pod with a writable root serves traced requests and stops; the engine's
    diff of its root must then be empty (only /tmp, the emptyDir, may change). The chart's own
    read-only pods log no write error."""
    ports = {"gateway": free_port(), "gateway internal": free_port(), "worker": free_port()}
    hosts = pods.hosts
    twins = {
        "worker": pods.spec(
            "worker",
            read_only_root=False,
            name_suffix="-twin",
            env_overrides={
                "PORT": str(ports["worker"]),
                "GATEWAY_INTERNAL_URL": (
                    f"http://{_host_of(hosts, 'gateway-internal')}:{ports['gateway internal']}"
                ),
            },
        ),
        "gateway": pods.spec(
            "gateway",
            read_only_root=False,
            name_suffix="-twin",
            env_overrides={
                "PORT": str(ports["gateway"]),
                "INTERNAL_PORT": str(ports["gateway internal"]),
                "WORKER_URL": f"http://{_host_of(hosts, 'worker')}:{ports['worker']}",
            },
        ),
    }
    for run in twins.values():
        pods.start(run, ready_port=int(run.env["PORT"]))
    assert http_status(f"http://127.0.0.1:{ports['gateway']}/api/work?tasks=2") == 200
    written = {}
    for app, run in twins.items():
        pods.engine("stop", "--time", str(run.grace_seconds), run.pod_name)
        assert pods.exit_code(run.pod_name) == 0, pods.logs(run.pod_name)
        diff = pods.engine("diff", run.pod_name).stdout.split("\n")
        # The engine itself bind-mounts /etc/hosts, /etc/hostname, /etc/resolv.conf and
        # /run/.containerenv.
        written[app] = [
            line for line in diff if line.strip() and line.strip() not in ("C /etc", "C /run")
        ]
    assert written == {"gateway": [], "worker": []}
    for app, run in running.items():
        logs = pods.logs(run.pod_name)
        assert not [e for e in READ_ONLY_ERRORS if e in logs], (
            f"{app} tried to write to its read-only root:\n{logs}"
        )


def _host_of(hosts: dict[str, str], app: str) -> str:
    return next(name for name in hosts if name.endswith(f"-{app}"))


@pytest.mark.parametrize("app", APPS)
def test_stop_under_load(
    pods: Pods, running: dict[str, PodRun], stand_in: Collector, app: str
) -> None:
    """`podman stop` as the kubelet does it (preStop, SIGTERM, the rest of the grace period)
    while load runs: no failed request, every span of every answered request in the collector,
    exit 0 before SIGKILL. Stopping the gateway, its internal listener keeps answering the
    worker's quota checks until the requests in flight are done."""
    gateway_port = running["gateway"].probes["readinessProbe"].port
    target = running[app]
    live = LoadResult()
    stopping = False

    def stop_sending() -> None:
        # Endpoints drop the pod: new requests stop arriving; those in flight must finish.
        nonlocal stopping
        stopping = True

    async def scenario() -> tuple[LoadResult, int]:
        load = asyncio.create_task(
            drive(
                f"http://127.0.0.1:{gateway_port}/api/work?tasks=2&delay_ms=100",
                concurrency=8,
                duration=120,
                keep_going=lambda: not stopping,
                result=live,
            )
        )
        await answered(live, 20, load)
        exit_code = await asyncio.to_thread(pods.stop_as_kubelet, target, stop_sending)
        return await load, exit_code

    result, exit_code = asyncio.run(scenario())
    logs = pods.logs(target.pod_name)
    assert exit_code == 0, (
        f"{app} exited {exit_code} (137: killed at the end of the grace period)\n{logs}"
    )
    assert result.failures == 0, result.errors[:5] + [s for s in result.statuses if s != 200][:5]
    assert not [e for e in READ_ONLY_ERRORS if e in logs], logs
    # The other pod exports on its batch schedule: wait for its spans, as for any trace.
    incomplete = incomplete_traces(
        stand_in.tempo_url, [t for _, t in result.traces], SPANS_PER_REQUEST, timeout=60
    )
    assert incomplete == [], (
        f"{len(incomplete)} of {len(result.traces)} traces incomplete, e.g. {incomplete[:3]}"
    )
    report(
        f"stop the {app} under load: {result.requests} requests, {result.failures} failed, "
        f"{len(result.traces) * SPANS_PER_REQUEST} spans all received, exit code {exit_code} "
        f"within {target.grace_seconds} s"
    )
