"""`make bench-collector`: the real Collector's capacity with the chart's configuration.

The Collector (`make collector`'s distribution, running charts/tandem/files/otelcol-config.yaml)
gets one core of its own (taskset, GOMAXPROCS=1); the load generator and the sink that stands
in for Tempo share the other. The load is OTLP/gRPC export requests of 512 spans, as the
services' batch span processor sends them, offered open-loop at rising rates. Each step
reports what the Collector accepted, refused and delivered, its CPU and its memory.

Then the same above capacity, in a memory cgroup of its own (cgroup v1 or v2, when this
process may make one): the memory_limiter must refuse data rather than let the kernel kill it.

Prints a Markdown report for docs/collector.md.

collector.topology=two-tier (docs/scaling.md): TANDEM_BENCH_OTELCOL_CONFIG selects another
of the chart's configs, files/otelcol-agent.yaml (its load_balancing exporter's static
resolver names the sink: OTELCOL_LB_RESOLVER) or files/otelcol-gateway.yaml (tail sampling;
its OTELCOL_TAIL_* settings pass through from this environment, and --drain-seconds should
exceed its decision_wait). --spans-per-trace groups the spans into traces, as Tandem's are.
Every export carries trace ids of its own, so a tail sampler holds new traces throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tandem_collector.ports import free_ports
from tandem_localstack import OtelcolPorts

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_REQUEST = 512
# The backend holds each export this long: the exporter's own timeout (5 s), so no export
# gets through, as with a Tempo that is stuck. Spans pile up in the Collector.
SLOW_BACKEND_SECONDS = 5.0
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "charts" / "tandem" / "files" / "otelcol-config.yaml"


# Every trace id of an export starts with these 8 bytes; the generator swaps them for fresh
# ones per export (one bytes.replace), so no two exports share a trace.
TRACE_ID_PREFIX = bytes.fromhex("7a3d1c9e5b2f4a60")


def export_request(spans: int = SPANS_PER_REQUEST, spans_per_trace: int = 1) -> bytes:
    """One export of `spans` server spans shaped like Tandem's (the attributes the middleware
    sets), `spans_per_trace` to a trace, serialized once: the generator sends the same bytes
    again and again, but for the trace ids' prefix."""
    rng = random.Random(7)

    def attr(key: str, value: str | int) -> KeyValue:
        any_value = (
            AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
        )
        return KeyValue(key=key, value=any_value)

    made = []
    trace_id = b""
    for i in range(spans):
        start = 1_760_000_000_000_000_000 + rng.randrange(10**9)
        if i % spans_per_trace == 0:
            trace_id = TRACE_ID_PREFIX + rng.randbytes(8)
        made.append(
            Span(
                trace_id=trace_id,
                span_id=rng.randbytes(8),
                parent_span_id=rng.randbytes(8),
                name="POST /tasks",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=start,
                end_time_unix_nano=start + 2_500_000,
                attributes=[
                    attr("http.request.method", "POST"),
                    attr("url.path", "/tasks"),
                    attr("url.scheme", "http"),
                    attr("http.route", "/tasks"),
                    attr("http.response.status_code", 200),
                    attr("server.address", "tandem-worker"),
                    attr("server.port", 8081),
                    attr("network.protocol.version", "1.1"),
                    attr("client.address", "10.0.0.12"),
                    attr("user_agent.original", "python-httpx/0.28.1"),
                ],
            )
        )
    resource = Resource(
        attributes=[attr("service.name", "worker"), attr("service.version", "0.1.0")]
    )
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=made)])]
    )
    return request.SerializeToString()


class Sink:
    """Tempo's place: an OTLP/gRPC trace receiver that counts spans (and can be made slow)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.spans = 0
        self.delay = delay
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    self.export,
                    request_deserializer=ExportTraceServiceRequest.FromString,
                    response_serializer=ExportTraceServiceResponse.SerializeToString,
                )
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        (self.port,) = free_ports(1)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")

    async def export(
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> ExportTraceServiceResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.spans += sum(
            len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
        )
        return ExportTraceServiceResponse()


@dataclass
class Step:
    offered: float  # spans/s
    seconds: float
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    cpu: float = 0.0  # cores the Collector used
    cpu_seconds: float = 0.0  # its CPU time for the step and the drain after it
    rss_mib: float = 0.0  # peak
    dropped: dict[str, int] = field(default_factory=dict)  # by the Collector's own counters

    @property
    def dropped_text(self) -> str:
        return ", ".join(f"{n} {c:,}" for n, c in self.dropped.items() if c) or "0"

    @property
    def refused_text(self) -> str:
        """Spans refused, by gRPC status: `UNAVAILABLE 1,024, ...`, or 0."""
        return ", ".join(f"{n} {c:,}" for n, c in sorted(self.refused.items())) or "0"

    @property
    def achieved(self) -> float:
        return self.accepted / self.seconds


class Collector:
    """The real Collector with the chart's configuration, on loopback, pinned to `cpu`."""

    def __init__(
        self,
        binary: Path,
        sink_port: int,
        cpu: int,
        cgroup: Path | None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.ports = OtelcolPorts.free()
        self._cpu = 0.0
        env = {
            **os.environ,
            **self.ports.env(),
            "TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{sink_port}",
            # files/otelcol-agent.yaml: its one backend is the sink.
            "OTELCOL_LB_RESOLVER": f'{{static: {{hostnames: ["127.0.0.1:{sink_port}"]}}}}',
            "GOMAXPROCS": "1",
            **(extra_env or {}),
        }
        config = os.environ.get("TANDEM_BENCH_OTELCOL_CONFIG", str(CONFIG))  # for experiments
        command = ["taskset", "-c", str(cpu), str(binary), f"--config={config}"]
        if cgroup:
            # In the cgroup before exec: the memory_limiter reads its limit at start.
            join = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
            command = ["sh", "-c", join, str(cgroup), *command]
        self.log_path = Path(tempfile.mkdtemp(prefix="otelcol-bench-")) / "otelcol.log"
        self.log = self.log_path.open("wb")
        self.popen = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"the Collector exited with {self.popen.returncode}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.ports.health_url, timeout=1) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("the Collector did not become ready")

    def cpu_seconds(self) -> float:
        """CPU time so far; the last reading once the process is gone."""
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
            self._cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        return self._cpu

    def rss_mib(self) -> float:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> int:
        self.popen.terminate()
        code = self.popen.wait(30)
        self.log.close()
        return code


@contextlib.contextmanager
def memory_cgroup(limit_mib: int) -> Iterator[Path | None]:
    """A memory cgroup below this process's, limited to `limit_mib`; None if none can be made."""
    own = Path("/proc/self/cgroup").read_text().splitlines()
    path: Path | None = None
    for line in own:
        _, controllers, relative = line.split(":", 2)
        if "memory" in controllers.split(","):
            path = Path("/sys/fs/cgroup/memory") / relative.lstrip("/") / "tandem-bench"
            limit_file = "memory.limit_in_bytes"
        elif controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            path = Path("/sys/fs/cgroup") / relative.lstrip("/") / "tandem-bench"
            limit_file = "memory.max"
    if path is None:
        yield None
        return
    try:
        path.mkdir(exist_ok=True)
        (path / limit_file).write_text(str(limit_mib << 20))
    except OSError:
        yield None
        return
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.rmdir()


async def offer(
    target: str,
    payload: bytes,
    spans_per_second: float,
    seconds: float,
    step: Step,
    collector: Collector,
) -> None:
    """Send exports open-loop at the rate, each on its own, for `seconds`."""
    interval = SPANS_PER_REQUEST / spans_per_second
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        export: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EXPORT)
        pending: set[asyncio.Task[None]] = set()

        async def one() -> None:
            fresh = payload.replace(TRACE_ID_PREFIX, random.randbytes(8))
            try:
                await export(fresh, timeout=10)
                step.accepted += SPANS_PER_REQUEST
            except grpc.aio.AioRpcError as error:
                name = error.code().name
                step.refused[name] = step.refused.get(name, 0) + SPANS_PER_REQUEST

        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while (now := loop.time()) - start < seconds:
            due = int((now - start) / interval) + 1
            for _ in range(due - sent):
                task = asyncio.create_task(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
            sent = due
            step.rss_mib = max(step.rss_mib, collector.rss_mib())
            await asyncio.sleep(min(interval, 0.05))
        if pending:
            await asyncio.wait(pending)


async def run_step(
    collector: Collector,
    sink: Sink,
    payload: bytes,
    rate: float,
    seconds: float,
    drain: float = 15.0,
) -> Step:
    step = Step(rate, seconds)
    delivered_before, dropped_before = sink.spans, own_drops(collector.ports.telemetry_url)
    cpu_before, wall_before = collector.cpu_seconds(), time.monotonic()
    await offer(f"127.0.0.1:{collector.ports.grpc}", payload, rate, seconds, step, collector)
    # Delivered: what reaches the sink once the batch (1 s) and the exporter are through.
    deadline = time.monotonic() + drain
    while sink.spans - delivered_before < step.accepted and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    step.cpu_seconds = collector.cpu_seconds() - cpu_before
    step.cpu = step.cpu_seconds / (time.monotonic() - wall_before)
    step.delivered = sink.spans - delivered_before
    if collector.popen.poll() is None:
        after = own_drops(collector.ports.telemetry_url)
        step.dropped = {name: after[name] - dropped_before[name] for name in after}
    return step


async def measure(
    binary: Path,
    rates: list[float],
    seconds: float,
    limit_mib: int,
    spans_per_trace: int = 1,
    drain: float = 15.0,
    overload: bool = True,
) -> str:
    payload = export_request(spans_per_trace=spans_per_trace)
    config = os.environ.get("TANDEM_BENCH_OTELCOL_CONFIG", str(CONFIG))
    lines = [
        f"Export requests of {SPANS_PER_REQUEST} spans ({len(payload) / SPANS_PER_REQUEST:.0f} "
        f"bytes a span, {spans_per_trace} a trace), {seconds:.0f} s a step; the Collector on "
        f"one core (GOMAXPROCS=1), running {Path(config).name}.",
        "",
        "| Offered spans/s | Accepted spans/s | Refused | Delivered = accepted "
        "| Dropped inside, by its own counters | Collector CPU (cores) | Spans per CPU-second "
        "| Peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sink = Sink()
    await sink.server.start()
    collector = Collector(binary, sink.port, cpu=0, cgroup=None)
    try:
        collector.wait_ready()
        for rate in rates:
            step = await run_step(collector, sink, payload, rate, seconds, drain)
            lines.append(step_row(step))
            print(lines[-1], file=sys.stderr, flush=True)
    finally:
        collector.stop()
        await sink.server.stop(None)
    if not overload:
        return "\n".join(lines)

    # Above capacity with a slow backend, in a memory cgroup: refusals, not an OOM kill.
    lines += ["", memory_limiter_heading(limit_mib), ""]
    lines += [
        "| Go memory limit | Offered spans/s | Accepted spans/s | Refused | Delivered "
        "| Dropped inside, by its own counters | Peak RSS (MiB) "
        "| memory_limiter refusals logged | Outcome |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for gomemlimit in (None, f"{limit_mib * 8 // 10}MiB"):
        with memory_cgroup(limit_mib) as cgroup:
            if cgroup is None:
                return "\n".join([*lines, "No memory cgroup could be made here: not measured."])
            row = await overload_row(binary, payload, max(rates), seconds * 3, cgroup, gomemlimit)
            lines.append(row)
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


async def overload_row(
    binary: Path, payload: bytes, rate: float, seconds: float, cgroup: Path, gomemlimit: str | None
) -> str:
    slow = Sink(delay=SLOW_BACKEND_SECONDS)
    await slow.server.start()
    extra = {"GOMEMLIMIT": gomemlimit} if gomemlimit else {}
    collector = Collector(binary, slow.port, cpu=0, cgroup=cgroup, extra_env=extra)
    try:
        collector.wait_ready()
        step = await run_step(collector, slow, payload, rate, seconds)
        alive = collector.popen.poll() is None
    finally:
        code = collector.stop() if collector.popen.poll() is None else collector.popen.returncode
        await slow.server.stop(None)
    log = collector.log_path.read_text(errors="replace")
    refusals = log.count("Refusing data")
    outcome = (
        f"ran on; exit {code} on SIGTERM" if alive else f"died (exit {code}: killed by the kernel)"
    )
    return (
        f"| {gomemlimit or 'none (as the chart runs it)'} | {step.offered:,.0f} | "
        f"{step.achieved:,.0f} | {step.refused_text} | {step.delivered:,} | "
        f"{step.dropped_text if alive else '-'} | {step.rss_mib:.0f} | {refusals} | "
        f"{outcome} |"
    )


# What a Collector can drop after accepting it, by the metric families that count it (summed
# over their labels): spans its exporter queue turned away when full, and traces the tail
# sampler evicted undecided (more than num_traces held), which it counts only when their
# decision falls due, decision_wait after they arrived: --drain-seconds must outlast it.
DROPS = {
    "queue full (spans)": "otelcol_exporter_enqueue_failed_spans",
    "evicted undecided (traces)": (
        "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early"
    ),
}


def own_drops(telemetry_url: str) -> dict[str, int]:
    """The Collector's own counts of what it dropped (DROPS), now."""
    with urllib.request.urlopen(telemetry_url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    return {
        name: int(sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(family)))
        for name, family in DROPS.items()
    }


def memory_limiter_heading(limit_mib: int) -> str:
    return (
        f"A stuck backend (each export held {SLOW_BACKEND_SECONDS:.0f} s, the exporter's "
        f"timeout), the Collector in a memory cgroup of {limit_mib} MiB, the chart's limit "
        "(memory_limiter: limit 80%, spike 20%):"
    )


def step_row(step: Step) -> str:
    return (
        f"| {step.offered:,.0f} | {step.achieved:,.0f} | {step.refused_text} | "
        f"{'yes' if step.delivered == step.accepted else f'no ({step.delivered:,})'} | "
        f"{step.dropped_text} | {step.cpu:.2f} | "
        f"{step.accepted / max(step.cpu_seconds, 1e-9):,.0f} | {step.rss_mib:.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--otelcol", type=Path, required=True)
    parser.add_argument(
        "--rates",
        default="25000,50000,75000,100000,125000,150000,200000",
        help="offered spans/s, one step each",
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    # The chart's collector.resources.limits.memory.
    parser.add_argument("--memory-mib", type=int, default=512)
    parser.add_argument("--spans-per-trace", type=int, default=1)
    # Past the gateway tier's decision_wait (10 s) and its batch.
    parser.add_argument("--drain-seconds", type=float, default=15.0)
    parser.add_argument(
        "--no-overload", action="store_true", help="skip the stuck-backend runs in a cgroup"
    )
    args = parser.parse_args(argv)
    rates = [float(rate) for rate in args.rates.split(",")]
    report = measure(
        args.otelcol,
        rates,
        args.seconds,
        args.memory_mib,
        args.spans_per_trace,
        args.drain_seconds,
        overload=not args.no_overload,
    )
    print(asyncio.run(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
