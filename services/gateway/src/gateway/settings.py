"""The gateway's settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from tandem_service import SERVER_ENV_VARS
from tandem_telemetry.env import env_float, env_str

SERVICE_NAME = "gateway"
DEFAULT_PORT = 8080
DEFAULT_WORKER_URL = "http://127.0.0.1:8081"

# Every variable the gateway reads itself (tandem_telemetry.ENV_VARS lists the telemetry ones).
ENV_VARS = frozenset({*SERVER_ENV_VARS, "WORKER_URL", "WORKER_TIMEOUT"})


@dataclass(frozen=True)
class Settings:
    worker_url: str = DEFAULT_WORKER_URL
    # Total budget for one call to the worker, retries included, in seconds.
    worker_timeout: float = 5.0

    @classmethod
    def from_env(cls) -> Settings:
        """Read WORKER_URL and WORKER_TIMEOUT; InvalidEnvVar names a malformed one."""
        return cls(
            worker_url=env_str("WORKER_URL", DEFAULT_WORKER_URL).rstrip("/"),
            worker_timeout=env_float("WORKER_TIMEOUT", cls.worker_timeout),
        )
