"""The container suite: both images built with `make images`, and the chart's pods run from them.

Every CI run builds the images on a local Debian base (`make test-base-image`:
no registry is reachable there) and starts the gateway and the worker from
the pod specs `helm template` renders, with podman or docker. The local
collector stands in for the Collector and Tempo. What a local engine lacks is
substituted, and the substitutions are printed at the end of the run.

Without an engine: under CI=true the suite fails, with the reason; on a
developer's machine it is left out, and the run says so in one line.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest
import yaml

from tandem_localstack import Collector, Stack
from tests.containers.engine import Engine, detect
from tests.containers.podspec import PodRun, translate
from tests.k8s.conftest import RELEASE, REPO, helm_template, package_chart, tool

APPS = ("gateway", "worker")
CONTAINERS_MK = REPO / "mk" / "containers.mk"
HERE = Path(__file__).resolve().parent

# For the end of the run: timings and outcomes, and every substitution with the pods it applies to.
_REPORT: list[str] = []
_SUBSTITUTIONS: dict[str, list[str]] = {}
_NOT_RUN: list[str] = []


def mk_value(name: str) -> str:
    """A `NAME := value` from mk/containers.mk, where the build's names live."""
    match = re.search(rf"^{name}\s*:?=\s*(\S+)\s*$", CONTAINERS_MK.read_text(), re.M)
    assert match, f"mk/containers.mk defines no {name}"
    return match.group(1).replace("$(TOOLS)", str(REPO / ".tools"))


def report(line: str) -> None:
    if line not in _REPORT:
        _REPORT.append(line)


# --- Whether the suite can run here --------------------------------------------------


def unavailable_reason() -> str | None:
    engine, why = detect()
    if engine is None:
        return why
    has_base = engine("image", "inspect", mk_value("TEST_BASE_IMAGE"), check=False).returncode == 0
    if has_base or Path(mk_value("TEST_BASE_TAR")).exists():
        return None
    if not shutil.which("debootstrap"):
        return (
            "no base image yet, and debootstrap is not installed to make one "
            "(apt-get install debootstrap)"
        )
    if os.geteuid() != 0:
        return (
            "no base image yet, and debootstrap needs root to make one "
            "(run `sudo make test-base-image` once)"
        )
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if HERE in Path(str(item.path)).parents]
    if not mine:
        return
    reason = unavailable_reason()
    if reason is None or os.environ.get("CI") == "true":
        return  # under CI the fixtures fail with the reason: never a silent skip
    config.hook.pytest_deselected(items=mine)
    items[:] = [item for item in items if item not in mine]
    _NOT_RUN.append(
        f"the container suite (tests/containers, {len(mine)} tests) did not run: {reason}"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _NOT_RUN:
        terminalreporter.write_line(line, yellow=True)
    if _REPORT or _SUBSTITUTIONS:
        terminalreporter.section("container suite")
        for line in _REPORT:
            terminalreporter.write_line(line)
        terminalreporter.write_line("What a local engine lacks, and what stood in for it:")
        for note, pods in _SUBSTITUTIONS.items():
            terminalreporter.write_line(f"- {note}" + (f" [{', '.join(pods)}]" if pods else ""))


# --- Engine and images ---------------------------------------------------------------


@pytest.fixture(scope="session")
def engine() -> Engine:
    found, why = detect()
    if found is None:
        pytest.fail(f"no container engine: {why}", pytrace=False)
    return found


@dataclass
class Images:
    base: str
    python: str
    secret_marker: str  # the body of a certificate that only the build secret holds
    tags: dict[str, str] = field(default_factory=dict)  # service -> image
    dev_sync: dict[str, str] = field(default_factory=dict)


def _make(engine: Engine, *args: str, cwd: Path = REPO) -> float:
    """Run make with this suite's engine (in `cwd`, the repository or a copy); fail with
    make's output; return the seconds it took."""
    started = time.monotonic()
    proc = subprocess.run(
        ["make", "--no-print-directory", *args, f"CONTAINER_ENGINE={engine.name}"],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"make {' '.join(args)} exited {proc.returncode}\n"
            f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}",
            pytrace=False,
        )
    return time.monotonic() - started


def _host_ca_bundle() -> Path:
    """The CA bundle pip here trusts (a TLS-intercepting proxy's CA among them), else certifi's."""
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    import certifi

    return Path(certifi.where())


def _secret_bundle(directory: Path) -> tuple[Path, str]:
    """The host's bundle plus a marker certificate, as the build secret. The
    marker is made once and kept, so cached layers were built with it too."""
    directory.mkdir(parents=True, exist_ok=True)
    marker_path = directory / "secret-marker.pem"
    if not marker_path.exists():
        import trustme

        trustme.CA().cert_pem.write_to_path(str(marker_path))
    marker = marker_path.read_text()
    bundle = directory / "ca-bundle-for-build.pem"
    bundle.write_text(_host_ca_bundle().read_text().rstrip("\n") + "\n" + marker)
    # One whole base64 line from inside the certificate: unique to it, and never split by a
    # line break.
    lines = [line for line in marker.splitlines() if not line.startswith("-----")]
    return bundle, lines[len(lines) // 2]


def build_one_image(engine: Engine, service: str, *variables: str) -> float:
    """One service's image, by the recipe `make images` runs for each (mk/containers.mk's
    build_image), with this suite's build secret and the make `variables` given (BASE_IMAGE,
    IMAGE_TAG...); the seconds it took."""
    bundle, _ = _secret_bundle(Path(mk_value("TEST_BASE_DIR")))
    recipe = f"tandem-one-image: ; $(call build_image,{service},$(call image_of,{service}))"
    return _make(engine, f"--eval={recipe}", "tandem-one-image", f"CA_BUNDLE={bundle}", *variables)


@pytest.fixture(scope="session")
def images(engine: Engine, chart: dict[str, dict[str, Any]]) -> Images:
    """Both images, and their DEV_SYNC variants, built by `make images` on the local base."""
    base = mk_value("TEST_BASE_IMAGE")
    bundle, marker = _secret_bundle(Path(mk_value("TEST_BASE_DIR")))
    seconds = _make(engine, "test-base-image")
    report(
        f"base image {base}: ready in {seconds:.0f} s (debootstrap only when .tools/ has no copy)"
    )
    common = [f"BASE_IMAGE={base}", f"CA_BUNDLE={bundle}"]
    seconds = _make(engine, "images", *common)
    report(f"make images ({engine.name}, base {base}): {seconds:.0f} s")
    tags = {app: chart[app]["spec"]["template"]["spec"]["containers"][0]["image"] for app in APPS}
    version = tags["gateway"].rsplit(":", 1)[1]
    seconds = _make(engine, "images", *common, "DEV_SYNC=true", f"IMAGE_TAG={version}-devsync")
    report(f"make images DEV_SYNC=true: {seconds:.0f} s")
    for image in tags.values():
        engine("image", "inspect", image)  # the chart's image names are what make built
    python = engine(
        "run",
        "--rm",
        *engine.run_limits(),
        "--entrypoint",
        "python",
        tags["worker"],
        "-c",
        "import platform; print(platform.python_version())",
    ).stdout.strip()
    report(
        f"Python in the images: {python} "
        "(Debian bookworm's; the production base is the official python:3.12 image)"
    )
    return Images(
        base,
        python,
        marker,
        tags,
        {app: f"{tag.rsplit(':', 1)[0]}:{version}-devsync" for app, tag in tags.items()},
    )


# --- The rendered chart ---------------------------------------------------------------


def _render(tmp_path_factory: pytest.TempPathFactory, *args: str) -> dict[str, dict[str, Any]]:
    """The chart rendered by Helm from the packaged chart, as tests/k8s renders it (default
    values, plus `args`): component -> workload (Deployment or Pod)."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    package = package_chart(tool("helm"), env, tmp_path_factory.mktemp("chart-package"))
    proc = helm_template(tool("helm"), env, package, *args)
    workloads = {}
    for doc in yaml.safe_load_all(proc.stdout):
        if doc and doc["kind"] in ("Deployment", "Pod"):
            workloads[doc["metadata"]["labels"]["app.kubernetes.io/component"]] = doc
    return workloads


@pytest.fixture(scope="session")
def chart(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The default values rendered by Helm: component -> workload (Deployment or Pod)."""
    return _render(tmp_path_factory)


@pytest.fixture(scope="session")
def untrusted_chart(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The chart with the gateway at the edge: gateway.untrustedContext=true."""
    return _render(tmp_path_factory, "--set", "gateway.untrustedContext=true")


# The propagators the B3 pods are rendered with: B3's multi-header format beside the W3C two.
B3_PROPAGATORS = ("tracecontext", "baggage", "b3multi")


@pytest.fixture(scope="session")
def b3_chart(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The chart with B3 on: telemetry.propagators={tracecontext,baggage,b3multi}."""
    return _render(
        tmp_path_factory, "--set", f"telemetry.propagators={{{','.join(B3_PROPAGATORS)}}}"
    )


def _service_hosts(chart: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Every Service name the pods' env and args point at (tandem-gateway-internal among them),
    served on this host's loopback."""
    text = yaml.safe_dump(dict(chart))
    return {
        name: "127.0.0.1"
        for name in sorted(set(re.findall(rf"http://({RELEASE}-[a-z-]+):\d+", text)))
    }


def _port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port, url
    return port


def _require_free(ports: Mapping[str, int]) -> None:
    busy = []
    for what, port in ports.items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                busy.append(f"{port} ({what})")
    if busy:
        pytest.fail(
            "the container suite runs the chart's pods on this host's network, with the chart's "
            f"ports; in use here: {', '.join(busy)}. Stop what holds them (e.g. `make run`).",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def stand_in(
    chart: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Collector]:
    """The local collector where the pods look for the Collector and Tempo: the ports their
    env and args name."""
    env = {
        e["name"]: e.get("value")
        for e in chart["gateway"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    command = chart["tracecheck"]["spec"]["containers"][0]["command"]
    tempo_url, metrics_url = (
        command[command.index("--tempo-url") + 1],
        command[command.index("--metrics-url") + 1],
    )
    ports = {
        "grpc": _port_of(env["OTEL_EXPORTER_OTLP_ENDPOINT"]),
        "query": _port_of(tempo_url),
        "prometheus": _port_of(metrics_url),
    }
    # Every container port: the gateway's internal listener too.
    app_ports = {
        f"{app} {port['name']}": int(port["containerPort"])
        for app in APPS
        for port in chart[app]["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    _require_free({**{f"collector {k}": v for k, v in ports.items()}, **app_ports})
    stack = Stack(tmp_path_factory.mktemp("stand-in"))
    collector = stack.start_collector(ports)
    collector_host = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).hostname
    tempo_host = urlsplit(tempo_url).hostname
    _SUBSTITUTIONS[
        f"the Collector ({collector_host}) and Tempo ({tempo_host}) → the local stand-in, "
        f"python -m tandem_collector, on 127.0.0.1 ports {ports['grpc']}, {ports['query']} "
        f"and {ports['prometheus']}"
    ] = []
    yield collector
    stack.stop_all()


# --- The pods ---------------------------------------------------------------------------


def http_status(url: str) -> int | None:
    try:
        with urlopen(url, timeout=2) as response:
            return int(response.status)
    except URLError as exc:
        return getattr(exc, "code", None)
    except OSError:
        return None


class Pods:
    """The chart's gateway and worker pods, started and stopped as a kubelet would."""

    def __init__(self, engine: Engine, chart: Mapping[str, Mapping[str, Any]]) -> None:
        self.engine = engine
        self.chart = chart
        self.hosts = _service_hosts(chart)
        self.node_name = socket.gethostname()
        self.started: list[str] = []

    def spec(
        self, component: str, *, workload: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> PodRun:
        """A component's pod from the default rendering, or from `workload` (another one)."""
        run = translate(
            workload or self.chart[component],
            self.engine,
            hosts=self.hosts,
            node_name=self.node_name,
            **kwargs,
        )
        for note in run.substitutions:
            pods = _SUBSTITUTIONS.setdefault(note, [])
            if run.pod_name not in pods:
                pods.append(run.pod_name)
        return run

    def start(self, run: PodRun, *, ready_port: int | None = None) -> PodRun:
        """Start a pod and wait until its readiness probe answers 200, within the startup
        probe's budget."""
        self.engine("rm", "--force", run.pod_name, check=False)
        self.engine("run", "--detach", *run.run_args)
        self.started.append(run.pod_name)
        probe = run.probes["readinessProbe"]
        startup = self.chart_probe_budget(run)
        deadline = time.monotonic() + startup
        url = f"http://127.0.0.1:{ready_port or probe.port}{probe.path}"
        while http_status(url) != 200:
            if not self.running(run.pod_name):
                pytest.fail(
                    f"{run.pod_name} exited before it was ready:\n{self.logs(run.pod_name)}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{run.pod_name} not ready at {url} within the startup probe's {startup} s:"
                    f"\n{self.logs(run.pod_name)}",
                    pytrace=False,
                )
            time.sleep(0.2)
        return run

    def chart_probe_budget(self, run: PodRun) -> int:
        """How long the kubelet would wait for the startup probe: periodSeconds ×
        failureThreshold."""
        container = self._container(run)
        probe = container.get("startupProbe", {})
        return int(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))

    def _container(self, run: PodRun) -> Mapping[str, Any]:
        for workload in self.chart.values():
            spec = workload["spec"].get("template", {}).get("spec", workload["spec"])
            for container in spec["containers"]:
                if container["name"] == run.container_name:
                    return container
        raise KeyError(run.container_name)

    def running(self, name: str) -> bool:
        proc = self.engine("inspect", "--format", "{{.State.Running}}", name, check=False)
        return proc.stdout.strip() == "true"

    def exit_code(self, name: str) -> int:
        return int(self.engine("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())

    def logs(self, name: str) -> str:
        proc = self.engine("logs", name, check=False)
        return (proc.stdout + proc.stderr)[-8000:]

    def stop_as_kubelet(self, run: PodRun, before_sigterm: Any = None) -> int:
        """The kubelet's order: the preStop hook, then SIGTERM with the rest of the
        grace period, then SIGKILL. Returns the exit code (137 means killed)."""
        started = time.monotonic()
        if run.pre_stop:
            self.engine("exec", run.pod_name, *run.pre_stop, timeout=run.grace_seconds)
        if before_sigterm:
            before_sigterm()
        remaining = max(1, int(run.grace_seconds - (time.monotonic() - started)))
        self.engine("stop", "--time", str(remaining), run.pod_name, timeout=run.grace_seconds + 30)
        return self.exit_code(run.pod_name)

    def remove_all(self) -> None:
        for name in self.started:
            self.engine("rm", "--force", name, check=False)


@pytest.fixture(scope="session")
def pods(
    engine: Engine, images: Images, chart: dict[str, dict[str, Any]], stand_in: Collector
) -> Iterator[Pods]:
    pods = Pods(engine, chart)
    try:
        yield pods
    finally:
        pods.remove_all()


@pytest.fixture
def running(pods: Pods) -> dict[str, PodRun]:
    """The gateway and worker pods, each started afresh when a test before stopped it."""
    runs = {}
    for app in ("worker", "gateway"):
        run = pods.spec(app)
        if not pods.running(run.pod_name):
            pods.start(run)
        runs[app] = run
    return runs
