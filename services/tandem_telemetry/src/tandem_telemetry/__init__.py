"""Tandem's shared OpenTelemetry wiring.

    from tandem_telemetry import instrument
    app = instrument(Starlette(routes=routes), "gateway")

Everything is configured by the standard OTEL_* variables (see ENV_VARS).
"""

# First: otel_env imports opentelemetry.propagate so that a bad OTEL_PROPAGATORS cannot end it.
from tandem_telemetry import otel_env  # noqa: F401
from tandem_telemetry.bootstrap import Telemetry, current, get_tracer, setup, shutdown
from tandem_telemetry.client import (
    RetryPolicy,
    Timeouts,
    TotalTimeout,
    TracingTransport,
    create_client,
)
from tandem_telemetry.env import InvalidEnvVar
from tandem_telemetry.lifespan import flushing_lifespan, instrument, start
from tandem_telemetry.logs import JsonFormatter, configure_logging
from tandem_telemetry.middleware import ERROR_TYPE_KEY, TracingMiddleware
from tandem_telemetry.settings import ENV_VARS, TelemetrySettings

__all__ = [
    "ENV_VARS",
    "ERROR_TYPE_KEY",
    "InvalidEnvVar",
    "JsonFormatter",
    "RetryPolicy",
    "Telemetry",
    "TelemetrySettings",
    "Timeouts",
    "TotalTimeout",
    "TracingMiddleware",
    "TracingTransport",
    "configure_logging",
    "create_client",
    "current",
    "flushing_lifespan",
    "get_tracer",
    "instrument",
    "setup",
    "shutdown",
    "start",
]
