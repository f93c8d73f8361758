"""The worker's settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from tandem_service import SERVER_ENV_VARS
from tandem_telemetry.env import env_str

SERVICE_NAME = "worker"
DEFAULT_PORT = 8081
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"

# Every variable the worker reads itself (tandem_telemetry.ENV_VARS lists the telemetry ones).
ENV_VARS = frozenset({*SERVER_ENV_VARS, "GATEWAY_URL"})


@dataclass(frozen=True)
class Settings:
    gateway_url: str = DEFAULT_GATEWAY_URL

    @classmethod
    def from_env(cls) -> Settings:
        return cls(gateway_url=env_str("GATEWAY_URL", DEFAULT_GATEWAY_URL).rstrip("/"))
