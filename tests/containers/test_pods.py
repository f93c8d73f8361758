"""The chart's pods, run from the built images: `helm test`, probes, a read-only root, a stop
under load."""

from __future__ import annotations

import asyncio

import pytest

from tandem_collector.localstack import Collector
from tests.containers.conftest import APPS, Pods, http_status, report
from tests.containers.podspec import PodRun
from tests.reliability.load import LoadResult, answered, drive, incomplete_traces
from tests.support import free_port

SPANS_PER_REQUEST = 13  # 1 + 6N with N = 2
# What a read-only root filesystem says when a process tries to write to it.
READ_ONLY_ERRORS = ("Read-only file system", "EROFS", "[Errno 30]")


def test_helm_test_pod_passes(pods: Pods, running: dict[str, PodRun]) -> None:
    """The `helm test` pod, from its rendered spec: span tree, error chain, baggage and metrics."""
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
    """A twin of each pod with a writable root serves traced requests and stops; the engine's diff
    of its root must then be empty (only /tmp, the emptyDir, may change). The chart's own read-only
    pods log no write error."""
    ports = {"gateway": free_port(), "worker": free_port()}
    hosts = pods.hosts
    twins = {
        "worker": pods.spec(
            "worker",
            read_only_root=False,
            name_suffix="-twin",
            env_overrides={
                "PORT": str(ports["worker"]),
                "GATEWAY_URL": f"http://{_host_of(hosts, 'gateway')}:{ports['gateway']}",
            },
        ),
        "gateway": pods.spec(
            "gateway",
            read_only_root=False,
            name_suffix="-twin",
            env_overrides={
                "PORT": str(ports["gateway"]),
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
        # The engine bind-mounts /etc/hosts, /etc/hostname, /etc/resolv.conf, /run/.containerenv.
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
    """`podman stop` as the kubelet does it (preStop, SIGTERM, the rest of the grace period) while
    load runs: no failed request, every span of every answered request in the collector, exit 0
    before SIGKILL."""
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
