"""The gateway's settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from tandem_service import ADMISSION_ENV_VARS, SERVER_ENV_VARS, max_in_flight_from_env
from tandem_telemetry.env import env_float, env_int, env_str

SERVICE_NAME = "gateway"
DEFAULT_PORT = 8080
DEFAULT_WORKER_URL = "http://127.0.0.1:8081"
# Chosen from the overload measurements in docs/benchmarks.md (section Overload).
DEFAULT_MAX_IN_FLIGHT = 8
DEFAULT_WORKER_CONCURRENCY = 64

# Every variable the gateway reads itself (tandem_telemetry.ENV_VARS lists the telemetry ones).
ENV_VARS = frozenset(
    {*SERVER_ENV_VARS, *ADMISSION_ENV_VARS, "WORKER_URL", "WORKER_TIMEOUT", "WORKER_CONCURRENCY"}
)


@dataclass(frozen=True)
class Settings:
    worker_url: str = DEFAULT_WORKER_URL
    # Total budget for one call to the worker, retries included, in seconds.
    worker_timeout: float = 5.0
    # /api/* requests served at once by one process; past it, 503 at once. 0: no limit.
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    # Calls to the worker in flight at once from one process, all requests together.
    worker_concurrency: int = DEFAULT_WORKER_CONCURRENCY

    @classmethod
    def from_env(cls) -> Settings:
        """Read the gateway's variables (ENV_VARS); InvalidEnvVar names a malformed one."""
        return cls(
            worker_url=env_str("WORKER_URL", DEFAULT_WORKER_URL).rstrip("/"),
            worker_timeout=env_float("WORKER_TIMEOUT", cls.worker_timeout),
            max_in_flight=max_in_flight_from_env(DEFAULT_MAX_IN_FLIGHT),
            worker_concurrency=env_int("WORKER_CONCURRENCY", DEFAULT_WORKER_CONCURRENCY),
        )
