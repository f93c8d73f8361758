"""Settings read from the environment: the standard OTEL_* variables and Tandem's own few."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tandem_telemetry.env import env_choice, env_flag, env_float, env_int, env_list
from tandem_telemetry.otel_env import OtelSettings

# Every variable the package reads, with what it does. The README's table and
# the chart consistency test are built from this mapping, so it is the one
# place where a variable's name is spelled.
_OTLP_SETTINGS = {
    "ENDPOINT": (
        "The collector's OTLP/gRPC endpoint, `http://host:port` (plaintext) or "
        "`https://host:port` (TLS), no path. Default `http://localhost:4317`."
    ),
    "INSECURE": (
        "`true` or `false`; it must agree with the endpoint's scheme, which decides "
        "(`http://` is plaintext). Refused if it contradicts it."
    ),
    "CERTIFICATE": "CA bundle (PEM) to verify the collector's TLS certificate; needs `https://`.",
    "CLIENT_KEY": "Client private key (PEM) for mutual TLS, with `_CLIENT_CERTIFICATE`.",
    "CLIENT_CERTIFICATE": "Client certificate chain (PEM) for mutual TLS, with `_CLIENT_KEY`.",
    "HEADERS": "Headers sent with every export, `k=v,k=v`, values percent-encoded (e.g. a token).",
    "COMPRESSION": "`gzip` or `none` (the default).",
    "TIMEOUT": "Export timeout in milliseconds, as the specification says. Default 10000.",
    "PROTOCOL": "`grpc`, the only one Tandem ships; `http/protobuf` and `http/json` are refused.",
}
_LIMIT = "Span limit (SDK): at most this many "

# Every variable the package reads, with what it does. The README's table and
# the chart consistency test are built from this mapping, so it is the one
# place where a variable's name is spelled. Each OTEL_* one is checked at start
# (otel_env); OpenTelemetry's variables that nothing here reads are refused.
ENV_VARS: Mapping[str, str] = {
    "OTEL_SDK_DISABLED": (
        "`true`: no spans or metrics are made or exported, but the caller's context still "
        "flows through (extracted, passed on by the client, named in `traceresponse`), as with "
        "OpenTelemetry's own disabled SDK. Default `false`."
    ),
    "OTEL_SERVICE_NAME": "service.name; overrides the name the service passes in code.",
    "OTEL_RESOURCE_ATTRIBUTES": (
        "Extra resource attributes, `k=v,k=v` (the chart passes k8s.* and service.version here)."
    ),
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": (
        "Resource detectors to run (installed `opentelemetry_resource_detector` entry points)."
    ),
    "OTEL_TRACES_EXPORTER": (
        "`otlp` (default), `console` (spans on stdout), or `none` (no export; context still "
        "flows); a comma-separated list for several."
    ),
    "OTEL_METRICS_EXPORTER": "`otlp` (default), `console`, or `none`; a list for several.",
    "OTEL_LOGS_EXPORTER": (
        "`none` only: logs are JSON lines on stderr, never exported over OTLP (the Python "
        "SDK's logs API is still experimental)."
    ),
    **{f"OTEL_EXPORTER_OTLP_{name}": text for name, text in _OTLP_SETTINGS.items()},
    **{
        f"OTEL_EXPORTER_OTLP_{signal}_{name}": (
            f"`OTEL_EXPORTER_OTLP_{name}` for {signal.lower()} alone; it wins over the general one."
        )
        for signal in ("TRACES", "METRICS")
        for name in _OTLP_SETTINGS
    },
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": (
        "`cumulative` (default), `delta` or `lowmemory`."
    ),
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": (
        "`explicit_bucket_histogram` (default) or `base2_exponential_bucket_histogram`."
    ),
    "OTEL_TRACES_SAMPLER": (
        "`parentbased_always_on` (default), `parentbased_always_off`, "
        "`parentbased_traceidratio`, `always_on`, `always_off`, `traceidratio`, or an installed "
        "sampler's name. Anything else is refused."
    ),
    "OTEL_TRACES_SAMPLER_ARG": (
        "The ratio of the `traceidratio` samplers, 0 to 1 (default 1); refused for a sampler "
        "that takes none."
    ),
    "OTEL_PROPAGATORS": (
        "Context propagators, in order, e.g. `tracecontext,baggage,b3multi`; `none` for none. "
        "Default `tracecontext,baggage`. `tracecontext` and `baggage` are Tandem's W3C "
        "implementations (see Propagation); other names load the installed propagator packages."
    ),
    "OTEL_BSP_SCHEDULE_DELAY": "Batch span processor: ms between exports. Default 5000.",
    "OTEL_BSP_MAX_QUEUE_SIZE": (
        "Batch span processor: spans buffered before dropping. Default 2048."
    ),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": (
        "Batch span processor: spans per export, at most the queue size. Default 512."
    ),
    "OTEL_BSP_EXPORT_TIMEOUT": "Batch span processor: export timeout in ms. Default 30000.",
    "OTEL_METRIC_EXPORT_INTERVAL": "Metric export interval in ms. Default 60000.",
    "OTEL_METRIC_EXPORT_TIMEOUT": "Metric export timeout in ms. Default 30000.",
    "OTEL_METRICS_EXEMPLAR_FILTER": (
        "`trace_based` (default: exemplars from sampled spans), `always_on` or `always_off`."
    ),
    "OTEL_ATTRIBUTE_COUNT_LIMIT": f"{_LIMIT}attributes per span, event or link. Default 128.",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": f"{_LIMIT}characters per attribute value. No limit.",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": f"{_LIMIT}attributes per span. Default 128.",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": f"{_LIMIT}characters per span attribute value.",
    "OTEL_SPAN_EVENT_COUNT_LIMIT": f"{_LIMIT}events per span. Default 128.",
    "OTEL_SPAN_LINK_COUNT_LIMIT": f"{_LIMIT}links per span. Default 128.",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": f"{_LIMIT}attributes per event. Default 128.",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": f"{_LIMIT}attributes per link. Default 128.",
    "OTEL_PYTHON_CONTEXT": "The context implementation (default `contextvars_context`).",
    "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": (
        "`true`: the SDK also reports its own span and export counts (on releases that have them)."
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
    """Tandem's own knobs, and the OTEL_* settings that decide how the pipeline is built."""

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
    otel: OtelSettings = field(default_factory=OtelSettings)

    @classmethod
    def from_env(cls) -> TelemetrySettings:
        """Build settings from the environment; InvalidEnvVar names any malformed variable."""
        otel = OtelSettings.from_env()  # first: it also checks the OTEL_* variables read below
        return cls(
            disabled=env_flag("OTEL_SDK_DISABLED"),
            untrusted_context=env_flag("TANDEM_UNTRUSTED_CONTEXT"),
            untraced_paths=frozenset(env_list("TANDEM_UNTRACED_PATHS", DEFAULT_UNTRACED_PATHS)),
            shutdown_timeout=env_float("TANDEM_SHUTDOWN_TIMEOUT", 3.0),
            log_level=env_choice("LOG_LEVEL", LOG_LEVELS).upper(),
            fast_path=env_choice("TANDEM_FAST_PATH", FAST_PATH_MODES),
            max_queue_size=env_int("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE),
            otel=otel,
        )
