"""Settings read from the environment: the standard OTEL_* variables and Tandem's own few."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tandem_telemetry.env import env_choice, env_flag, env_float, env_int, env_list

# Every variable the package reads, with what it does. The README's table and
# the chart consistency test are built from this mapping, so it is the one
# place where a variable's name is spelled.
ENV_VARS: Mapping[str, str] = {
    # Read by the OpenTelemetry SDK and exporters themselves.
    "OTEL_SDK_DISABLED": (
        "`true` turns all telemetry off; the middleware then costs one check per request."
    ),
    "OTEL_SERVICE_NAME": "service.name; overrides the name the service passes in code.",
    "OTEL_RESOURCE_ATTRIBUTES": (
        "Extra resource attributes, `k=v,k=v` (the chart passes k8s.* and service.version here)."
    ),
    "OTEL_EXPORTER_OTLP_ENDPOINT": (
        "OTLP/gRPC endpoint of the collector. Default `http://localhost:4317`."
    ),
    "OTEL_EXPORTER_OTLP_INSECURE": (
        "`true` for plaintext gRPC to an `https`-less endpoint. Default: plaintext for `http://`."
    ),
    "OTEL_EXPORTER_OTLP_CERTIFICATE": "CA bundle (PEM) to verify the collector's TLS certificate.",
    "OTEL_EXPORTER_OTLP_HEADERS": "Headers sent with every export, `k=v,k=v` (e.g. an auth token).",
    "OTEL_EXPORTER_OTLP_COMPRESSION": "`gzip` or `none`.",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "Export timeout in seconds. Default 10.",
    "OTEL_TRACES_SAMPLER": (
        "Sampler, e.g. `parentbased_traceidratio`. Default `parentbased_always_on`."
    ),
    "OTEL_TRACES_SAMPLER_ARG": "The sampler's argument, e.g. `0.1`.",
    "OTEL_BSP_SCHEDULE_DELAY": "Batch span processor: ms between exports. Default 5000.",
    "OTEL_BSP_MAX_QUEUE_SIZE": (
        "Batch span processor: spans buffered before dropping. Default 2048."
    ),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "Batch span processor: spans per export. Default 512.",
    "OTEL_BSP_EXPORT_TIMEOUT": "Batch span processor: export timeout in ms. Default 30000.",
    "OTEL_METRIC_EXPORT_INTERVAL": "Metric export interval in ms. Default 60000.",
    "OTEL_PROPAGATORS": (
        "Context propagators, in order, e.g. `tracecontext,baggage,b3multi`; `none` for none. "
        "Default `tracecontext,baggage`. `tracecontext` and `baggage` are Tandem's W3C "
        "implementations (see Propagation); other names load the installed propagator packages."
    ),
    # Tandem's own.
    "TANDEM_UNTRUSTED_CONTEXT": (
        "`true`: treat incoming trace context as untrusted: start a new trace linked to the "
        "caller's, drop incoming baggage. Applies to every request on the public port; an "
        "internal listener (the gateway's `INTERNAL_PORT`) keeps the context of Tandem's own "
        "services. Default `false`."
    ),
    "TANDEM_UNTRACED_PATHS": "Comma-separated paths that get no span. Default `/healthz,/readyz`.",
    "TANDEM_SHUTDOWN_TIMEOUT": "Seconds that flushing telemetry may hold shutdown. Default 3.",
    "TANDEM_FAST_PATH": (
        "`auto`: the fast path (SDK internals, faster) on the SDK releases it was tested on, else "
        "the public API. `on`: the fast path, or refuse to start. `off`: the public API only. "
        "Default `auto`."
    ),
    "LOG_LEVEL": "Level of the JSON logs on stderr. Default `INFO`.",
}

DEFAULT_UNTRACED_PATHS = ("/healthz", "/readyz")
FAST_PATH_MODES = ("auto", "on", "off")  # the first is the default
LOG_LEVELS = ("info", "debug", "warning", "error", "critical")  # the first is the default
# The SDK's own default for OTEL_BSP_MAX_QUEUE_SIZE.
DEFAULT_MAX_QUEUE_SIZE = 2048


@dataclass(frozen=True)
class TelemetrySettings:
    """Tandem's own knobs. The SDK reads the OTEL_* variables itself."""

    disabled: bool = False
    untrusted_context: bool = False
    untraced_paths: frozenset[str] = field(
        default_factory=lambda: frozenset(DEFAULT_UNTRACED_PATHS)
    )
    shutdown_timeout: float = 3.0
    log_level: str = "INFO"
    fast_path: str = FAST_PATH_MODES[0]
    # OTEL_BSP_MAX_QUEUE_SIZE, read here too: delivery counts against the same size.
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE

    @classmethod
    def from_env(cls) -> TelemetrySettings:
        """Build settings from the environment; InvalidEnvVar names any malformed variable."""
        return cls(
            disabled=env_flag("OTEL_SDK_DISABLED"),
            untrusted_context=env_flag("TANDEM_UNTRUSTED_CONTEXT"),
            untraced_paths=frozenset(env_list("TANDEM_UNTRACED_PATHS", DEFAULT_UNTRACED_PATHS)),
            shutdown_timeout=env_float("TANDEM_SHUTDOWN_TIMEOUT", 3.0),
            log_level=env_choice("LOG_LEVEL", LOG_LEVELS).upper(),
            fast_path=env_choice("TANDEM_FAST_PATH", FAST_PATH_MODES),
            max_queue_size=env_int("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE),
        )
