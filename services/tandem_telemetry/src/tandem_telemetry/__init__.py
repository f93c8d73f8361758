"""Tandem's shared OpenTelemetry wiring.

    from tandem_telemetry import instrument
    app = instrument(Starlette(routes=routes), "gateway")

Everything is configured by the standard OTEL_* variables (see ENV_VARS).
"""

from tandem_telemetry.bootstrap import Telemetry, current, get_tracer, setup, shutdown
from tandem_telemetry.client import (
    RetryPolicy,
    Timeouts,
    TotalTimeout,
    TracingTransport,
    create_client,
)
from tandem_telemetry.env import InvalidEnvVar
from tandem_telemetry.lifespan import flushing_lifespan, instrument
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
]
