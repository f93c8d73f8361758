"""Providers, exporters and instruments: set up once per process, shut down within a bound."""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from grpc import Compression
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue

from tandem_telemetry.delivery import (
    AccountedBatchSpanProcessor,
    AccountedOTLPMetricExporter,
    AccountedSpanExporter,
    DeliveryReport,
)
from tandem_telemetry.env import env_str
from tandem_telemetry.otel_env import OtlpOptions
from tandem_telemetry.propagation import configured_propagator
from tandem_telemetry.settings import TelemetrySettings

logger = logging.getLogger("tandem_telemetry")

SERVICE_NAMESPACE = "tandem"
INSTRUMENTATION_SCOPE = "tandem_telemetry"
# Stable HTTP semconv: http.{server,client}.request.duration bucket boundaries, in seconds.
HTTP_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)


class DurationRecorder(Protocol):
    """What records a request duration: the SDK's Histogram, or the fast path's."""

    def record(self, amount: float, attributes: dict[str, Any]) -> None: ...


class FastPathUnavailable(RuntimeError):
    """TANDEM_FAST_PATH=on, but the fast path cannot run with the installed SDK."""


@dataclass
class Telemetry:
    """One process's telemetry pipeline: what the middleware and client use on every request.

    When disabled (OTEL_SDK_DISABLED=true) `enabled` is False and the tracer
    and meter are no-ops; nothing is exported.
    """

    settings: TelemetrySettings
    resource: Resource
    tracer: Tracer
    meter: Meter
    server_duration: DurationRecorder
    client_duration: DurationRecorder
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    delivery: DeliveryReport | None = None
    exporters: tuple[SpanExporter | MetricExporter, ...] = ()
    fast_path: bool = False
    pid: int = field(default_factory=os.getpid)

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Export everything buffered so far; True when both providers flushed in time."""
        if self.tracer_provider is None or self.meter_provider is None:
            return True
        millis = int(timeout * 1000)
        return bool(self.tracer_provider.force_flush(millis)) and bool(
            self.meter_provider.force_flush(millis)
        )

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop both providers, waiting at most `timeout` seconds (settings' default).

        An unreachable collector makes the exporters retry with backoff for
        up to their own timeout; past our bound we interrupt them, log what
        was left, and return False rather than hold the process.
        """
        if self.tracer_provider is None or self.meter_provider is None:
            return True
        bound = self.settings.shutdown_timeout if timeout is None else timeout
        millis = bound * 1000
        workers = [
            threading.Thread(
                target=self.tracer_provider.shutdown, name="tandem-trace-shutdown", daemon=True
            ),
            threading.Thread(
                target=self.meter_provider.shutdown,
                kwargs={"timeout_millis": millis},
                name="tandem-metric-shutdown",
                daemon=True,
            ),
        ]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + bound
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if not any(worker.is_alive() for worker in workers):
            if self.delivery is not None:
                self.delivery.close()
            return True
        # Interrupt the exporters' retry backoff, so the threads finish promptly. Off
        # this thread too: some SDK releases make shutdown wait for the export in
        # progress, backoff and all. Past half a second, the daemon threads are left.
        stoppers = [
            threading.Thread(target=exporter.shutdown, name="tandem-exporter-shutdown", daemon=True)
            for exporter in self.exporters
        ]
        for thread in stoppers:
            thread.start()
        deadline = time.monotonic() + 0.5
        for thread in [*stoppers, *workers]:
            thread.join(max(0.0, deadline - time.monotonic()))
        logger.warning("telemetry shutdown exceeded %.1fs; unexported telemetry was dropped", bound)
        if self.delivery is not None:
            self.delivery.close()
        return False


def build_resource(service_name: str, service_version: str | None) -> Resource:
    """The Resource: Tandem's defaults under OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME."""
    defaults: dict[str, AttributeValue] = {
        "service.name": service_name,
        "service.namespace": SERVICE_NAMESPACE,
        "service.instance.id": str(uuid.uuid4()),
        "deployment.environment.name": "development",
        # Tells hypercorn's worker processes apart, and proves the parent exports nothing.
        "process.pid": os.getpid(),
    }
    if service_version:
        defaults["service.version"] = service_version
    # k8s.pod.name, k8s.namespace.name and k8s.node.name arrive here too: the
    # chart puts them in OTEL_RESOURCE_ATTRIBUTES through the downward API.
    defaults.update(OTELResourceDetector().detect().attributes or {})
    return Resource.create(defaults)


def build_telemetry(
    service_name: str,
    *,
    service_version: str | None = None,
    settings: TelemetrySettings | None = None,
    span_exporter: SpanExporter | None = None,
    span_processor: SpanProcessor | None = None,
    metric_reader: MetricReader | None = None,
) -> Telemetry:
    """Build a pipeline without touching process-wide state. Most callers want `setup`."""
    settings = settings or TelemetrySettings.from_env()
    settings.otel.warn_unknown()
    resource = build_resource(service_name, service_version)
    if settings.disabled:
        noop_tracer = trace.NoOpTracerProvider().get_tracer(INSTRUMENTATION_SCOPE)
        noop_meter = metrics.NoOpMeterProvider().get_meter(INSTRUMENTATION_SCOPE)
        return Telemetry(settings, resource, noop_tracer, noop_meter, *_http_histograms(noop_meter))

    fast = load_fast_path(settings.fast_path)
    otel = settings.otel
    delivery = DeliveryReport()
    exporters: list[SpanExporter | MetricExporter] = []

    def accounted(exporter: SpanExporter) -> SpanProcessor:
        accounted_spans = AccountedSpanExporter(exporter, delivery)
        exporters.append(accounted_spans)
        return AccountedBatchSpanProcessor(accounted_spans, delivery, settings.max_queue_size)

    # A caller's processor or exporter (tests pass in-memory ones) replaces OTEL_TRACES_EXPORTER's.
    span_processors: list[SpanProcessor] = []
    if span_processor is not None:
        span_processors.append(span_processor)
    elif span_exporter is not None:
        span_processors.append(accounted(span_exporter))
    else:
        if "otlp" in otel.traces_exporters:
            otlp = fast.FastOTLPSpanExporter if fast is not None else _otlp_span_exporter()
            span_processors.append(accounted(otlp(**_otlp_arguments(otel.otlp["traces"]))))
        if "console" in otel.traces_exporters:
            span_processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
    metric_readers: list[MetricReader] = []
    if metric_reader is not None:
        metric_readers.append(metric_reader)
    else:
        if "otlp" in otel.metrics_exporters:
            accounted_metrics = AccountedOTLPMetricExporter(
                delivery, **_otlp_arguments(otel.otlp["metrics"])
            )
            exporters.append(accounted_metrics)
            metric_readers.append(PeriodicExportingMetricReader(accounted_metrics))
        if "console" in otel.metrics_exporters:
            metric_readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))

    tracer_provider = TracerProvider(resource=resource, sampler=otel.sampler)
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=metric_readers)
    tracer: Tracer = tracer_provider.get_tracer(INSTRUMENTATION_SCOPE)
    meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE)
    server_duration, client_duration = _http_histograms(meter)
    if fast is not None:
        tracer = fast.RequestTracer(tracer)
        server_duration, client_duration = (
            fast.DurationHistogram(server_duration),
            fast.DurationHistogram(client_duration),
        )
    delivery.count_losses_on(meter)
    return Telemetry(
        settings,
        resource,
        tracer,
        meter,
        server_duration,
        client_duration,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        delivery=delivery,
        exporters=tuple(exporters),
        fast_path=fast is not None,
    )


def _otlp_span_exporter() -> type[SpanExporter]:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter


def _otlp_arguments(options: OtlpOptions) -> dict[str, Any]:
    """What Tandem reads for an OTLP exporter itself (OtlpOptions); the SDK reads the rest."""
    return {
        "timeout": options.timeout_seconds,
        "compression": Compression.Gzip if options.gzip else Compression.NoCompression,
    }


def load_fast_path(mode: str) -> ModuleType | None:
    """The fast-path module, when TANDEM_FAST_PATH allows it and it was tested on the installed SDK.

    auto: the fast path where it was tested, else the public path and one
    INFO line saying why. on: the fast path, or FastPathUnavailable. off:
    the public path; the module is never imported.
    """
    if mode == "off":
        return None
    try:
        fastpath = importlib.import_module("tandem_telemetry.fastpath")
        reason = fastpath.unsupported_reason()
    # Whatever an SDK that moved or renamed what the fast path reads raises: never a failure.
    except Exception as exc:  # noqa: BLE001
        fastpath, reason = (
            None,
            f"it cannot load with the installed SDK ({type(exc).__name__}: {exc})",
        )
    if reason is None:
        return fastpath
    if mode == "on":
        raise FastPathUnavailable(
            f"TANDEM_FAST_PATH=on, but the fast path cannot be used: {reason}. "
            "Use TANDEM_FAST_PATH=auto (or off) to run on OpenTelemetry's public API."
        )
    logger.info(
        "TANDEM_FAST_PATH=auto: the public OpenTelemetry API path is used, since %s", reason
    )
    return None


def _http_histograms(meter: Meter) -> tuple[metrics.Histogram, metrics.Histogram]:
    server = meter.create_histogram(
        "http.server.request.duration",
        unit="s",
        description="Duration of HTTP server requests.",
        explicit_bucket_boundaries_advisory=HTTP_DURATION_BUCKETS,
    )
    client = meter.create_histogram(
        "http.client.request.duration",
        unit="s",
        description="Duration of HTTP client requests.",
        explicit_bucket_boundaries_advisory=HTTP_DURATION_BUCKETS,
    )
    return server, client


_lock = threading.Lock()


@dataclass
class _ProcessPipeline:
    """The pipeline `setup` built in this process, and whether the API's globals serve one."""

    telemetry: Telemetry | None = None
    # The API's global providers can be set once per process.
    globals_installed: bool = False


_process = _ProcessPipeline()


def setup(
    service_name: str | None = None,
    *,
    service_version: str | None = None,
    settings: TelemetrySettings | None = None,
    span_exporter: SpanExporter | None = None,
    span_processor: SpanProcessor | None = None,
    metric_reader: MetricReader | None = None,
) -> Telemetry:
    """Set up this process's telemetry and return it; later calls return the same pipeline.

    The service name defaults to OTEL_SERVICE_NAME. The keyword overrides
    replace what the environment would choose (tests pass in-memory
    exporters). A forked child builds its own pipeline: a parent's
    exporter threads do not survive a fork.
    """
    with _lock:
        existing = _process.telemetry
        if existing is not None and existing.pid == os.getpid():
            return existing
        name = service_name or env_str("OTEL_SERVICE_NAME", "unknown_service")
        telemetry = build_telemetry(
            name,
            service_version=service_version,
            settings=settings,
            span_exporter=span_exporter,
            span_processor=span_processor,
            metric_reader=metric_reader,
        )
        _process.telemetry = telemetry
        tracer_provider, meter_provider = telemetry.tracer_provider, telemetry.meter_provider
        if (
            tracer_provider is not None
            and meter_provider is not None
            and not _process.globals_installed
        ):
            # Process-wide globals can be set once; they serve code that asks
            # the API for a tracer. Tandem's own code uses `telemetry` directly.
            trace.set_tracer_provider(tracer_provider)
            metrics.set_meter_provider(meter_provider)
            _process.globals_installed = True
        # OTEL_PROPAGATORS (default tracecontext,baggage), with Tandem's W3C
        # Trace Context Level 2 parser for "tracecontext" (see propagation).
        propagate.set_global_textmap(configured_propagator())
        return telemetry


def current() -> Telemetry | None:
    """The pipeline `setup` built in this process, if any."""
    telemetry = _process.telemetry
    return telemetry if telemetry is not None and telemetry.pid == os.getpid() else None


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop this process's pipeline within its bound; the next `setup` builds anew."""
    with _lock:
        telemetry, _process.telemetry = _process.telemetry, None
    if telemetry is None or telemetry.pid != os.getpid():
        return True
    return telemetry.shutdown(timeout)


def get_tracer() -> Tracer:
    """The tracer for application spans (a no-op until `setup`, and when disabled)."""
    telemetry = current()
    return telemetry.tracer if telemetry is not None else trace.NoOpTracer()
