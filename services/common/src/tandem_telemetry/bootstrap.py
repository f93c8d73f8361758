"""Providers, exporters and instruments: set up once per process, shut down within a bound."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field

from opentelemetry import metrics, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.metrics import Meter
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tandem_telemetry.delivery import AccountedBatchSpanProcessor, AccountedMetricExporter, AccountedSpanExporter, DeliveryReport
from tandem_telemetry.durations import DurationHistogram
from tandem_telemetry.settings import TelemetrySettings
from tandem_telemetry.spans import RequestTracer

logger = logging.getLogger("tandem_telemetry")

SERVICE_NAMESPACE = "tandem"
INSTRUMENTATION_SCOPE = "tandem_telemetry"
# Stable HTTP semconv: http.{server,client}.request.duration bucket boundaries, in seconds.
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


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
    server_duration: DurationHistogram
    client_duration: DurationHistogram
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    delivery: DeliveryReport | None = None
    exporters: tuple[object, ...] = ()
    pid: int = field(default_factory=os.getpid)

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Export everything buffered so far; True when both providers flushed in time."""
        if self.tracer_provider is None or self.meter_provider is None:
            return True
        millis = int(timeout * 1000)
        return bool(self.tracer_provider.force_flush(millis)) and bool(self.meter_provider.force_flush(millis))

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
            threading.Thread(target=self.tracer_provider.shutdown, name="tandem-trace-shutdown", daemon=True),
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
        # Interrupt the exporters' retry backoff; the threads then finish promptly.
        for exporter in self.exporters:
            exporter.shutdown()  # type: ignore[attr-defined]
        for worker in workers:
            worker.join(0.5)
        logger.warning("telemetry shutdown exceeded %.1fs; unexported telemetry was dropped", bound)
        if self.delivery is not None:
            self.delivery.close()
        return False


def build_resource(service_name: str, service_version: str | None) -> Resource:
    """The Resource: Tandem's defaults, overridden by OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME."""
    defaults: dict[str, str | int] = {
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
    defaults.update(OTELResourceDetector().detect().attributes)  # type: ignore[arg-type]
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
    resource = build_resource(service_name, service_version)
    if settings.disabled:
        tracer_provider = trace.NoOpTracerProvider()
        meter_provider = metrics.NoOpMeterProvider()
        tracer = tracer_provider.get_tracer(INSTRUMENTATION_SCOPE)
        meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE)
        return Telemetry(settings, resource, tracer, meter, *_http_histograms(meter))

    delivery = DeliveryReport()
    exporters: list[object] = []
    if span_processor is None:
        if span_exporter is None:
            from tandem_telemetry.otlp import FastOTLPSpanExporter

            span_exporter = FastOTLPSpanExporter()
        accounted_spans = AccountedSpanExporter(span_exporter, delivery)
        exporters.append(accounted_spans)
        span_processor = AccountedBatchSpanProcessor(accounted_spans, delivery)
    if metric_reader is None:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        accounted_metrics = AccountedMetricExporter(OTLPMetricExporter(), delivery)
        exporters.append(accounted_metrics)
        metric_reader = PeriodicExportingMetricReader(accounted_metrics)

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(span_processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader])
    # The SDK's tracer, with spans started by tandem_telemetry.spans (see there why).
    tracer = RequestTracer(tracer_provider.get_tracer(INSTRUMENTATION_SCOPE))  # type: ignore[arg-type]
    meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE)
    delivery.count_losses_on(meter)
    return Telemetry(
        settings,
        resource,
        tracer,
        meter,
        *_http_histograms(meter),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        delivery=delivery,
        exporters=tuple(exporters),
    )


def _http_histograms(meter: Meter) -> tuple[DurationHistogram, DurationHistogram]:
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
    return DurationHistogram(server), DurationHistogram(client)


_lock = threading.Lock()
_current: Telemetry | None = None
_globals_installed = False


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
    global _current, _globals_installed
    with _lock:
        if _current is not None and _current.pid == os.getpid():
            return _current
        name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "unknown_service"
        telemetry = build_telemetry(
            name,
            service_version=service_version,
            settings=settings,
            span_exporter=span_exporter,
            span_processor=span_processor,
            metric_reader=metric_reader,
        )
        _current = telemetry
        if telemetry.enabled and not _globals_installed:
            # Process-wide globals can be set once; they serve code that asks
            # the API for a tracer. Tandem's own code uses `telemetry` directly.
            trace.set_tracer_provider(telemetry.tracer_provider)  # type: ignore[arg-type]
            metrics.set_meter_provider(telemetry.meter_provider)  # type: ignore[arg-type]
            _globals_installed = True
        propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))
        return telemetry


def current() -> Telemetry | None:
    """The pipeline `setup` built in this process, if any."""
    telemetry = _current
    return telemetry if telemetry is not None and telemetry.pid == os.getpid() else None


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop this process's pipeline within its bound; the next `setup` builds a new one."""
    global _current
    with _lock:
        telemetry, _current = _current, None
    if telemetry is None or telemetry.pid != os.getpid():
        return True
    return telemetry.shutdown(timeout)


def get_tracer() -> Tracer:
    """The tracer for application spans (a no-op until `setup`, and when disabled)."""
    telemetry = current()
    return telemetry.tracer if telemetry is not None else trace.NoOpTracer()
