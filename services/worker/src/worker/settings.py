"""The worker's settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from tandem_service import SERVER_ENV_VARS
from tandem_telemetry.env import env_str

SERVICE_NAME = "worker"
DEFAULT_PORT = 8081
# The gateway's internal listener (its INTERNAL_PORT), where /internal/quota is served.
DEFAULT_GATEWAY_INTERNAL_URL = "http://127.0.0.1:8082"

# Every variable the worker reads itself (tandem_telemetry.ENV_VARS lists the telemetry ones).
ENV_VARS = frozenset({*SERVER_ENV_VARS, "GATEWAY_INTERNAL_URL"})


@dataclass(frozen=True)
class Settings:
    gateway_internal_url: str = DEFAULT_GATEWAY_INTERNAL_URL

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            gateway_internal_url=env_str(
                "GATEWAY_INTERNAL_URL", DEFAULT_GATEWAY_INTERNAL_URL
            ).rstrip("/")
        )
