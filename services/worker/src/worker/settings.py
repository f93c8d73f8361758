"""The worker's settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from tandem_service import ADMISSION_ENV_VARS, SERVER_ENV_VARS, max_in_flight_from_env
from tandem_telemetry.env import env_str

SERVICE_NAME = "worker"
DEFAULT_PORT = 8081
# The gateway's internal listener (its INTERNAL_PORT), where /internal/quota is served.
DEFAULT_GATEWAY_INTERNAL_URL = "http://127.0.0.1:8082"
# Tasks in flight: chosen from the overload measurements in docs/benchmarks.md, section 7.
DEFAULT_MAX_IN_FLIGHT = 96

# Every variable the worker reads itself (tandem_telemetry.ENV_VARS lists the telemetry ones).
ENV_VARS = frozenset({*SERVER_ENV_VARS, *ADMISSION_ENV_VARS, "GATEWAY_INTERNAL_URL"})


@dataclass(frozen=True)
class Settings:
    gateway_internal_url: str = DEFAULT_GATEWAY_INTERNAL_URL
    # Tasks served at once by one process; past it, 503 at once. 0: no limit.
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            gateway_internal_url=env_str(
                "GATEWAY_INTERNAL_URL", DEFAULT_GATEWAY_INTERNAL_URL
            ).rstrip("/"),
            max_in_flight=max_in_flight_from_env(DEFAULT_MAX_IN_FLIGHT),
        )
