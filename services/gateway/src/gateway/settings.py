"""The gateway's settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from tandem_service import ADMISSION_ENV_VARS, SERVER_ENV_VARS, Listener, max_in_flight_from_env
from tandem_telemetry.env import env_float, env_str

SERVICE_NAME = "gateway"
DEFAULT_PORT = 8080
# /internal/* for Tandem's own services (the worker's quota checks), on a port of its own.
DEFAULT_INTERNAL_PORT = 8082
DEFAULT_WORKER_URL = "http://127.0.0.1:8081"
# Worker tasks in flight: chosen from the overload measurements in docs/benchmarks.md, section 7.
DEFAULT_MAX_IN_FLIGHT = 48

# The public routes on PORT; the internal ones on INTERNAL_PORT, in the same process.
PUBLIC_LISTENER = Listener.public(DEFAULT_PORT)
INTERNAL_LISTENER = Listener("INTERNAL_PORT", DEFAULT_INTERNAL_PORT)

# Every variable the gateway reads itself (tandem_telemetry.ENV_VARS lists the telemetry ones).
ENV_VARS = frozenset(
    {
        *SERVER_ENV_VARS,
        *ADMISSION_ENV_VARS,
        INTERNAL_LISTENER.port_variable,
        "WORKER_URL",
        "WORKER_TIMEOUT",
    }
)


@dataclass(frozen=True)
class Settings:
    worker_url: str = DEFAULT_WORKER_URL
    # Total budget for one call to the worker, retries included, in seconds.
    worker_timeout: float = 5.0
    # Worker tasks one process has in flight for /api/* requests (a request counts its
    # tasks); a request that would go past it gets a 503 at once. 0: no limit.
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    @classmethod
    def from_env(cls) -> Settings:
        """Read the gateway's variables (ENV_VARS); InvalidEnvVar names a malformed one."""
        return cls(
            worker_url=env_str("WORKER_URL", DEFAULT_WORKER_URL).rstrip("/"),
            worker_timeout=env_float("WORKER_TIMEOUT", cls.worker_timeout),
            max_in_flight=max_in_flight_from_env(DEFAULT_MAX_IN_FLIGHT),
        )
