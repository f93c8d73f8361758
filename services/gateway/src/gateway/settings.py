"""The gateway's settings, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tandem_telemetry.serving import SERVER_ENV_VARS

SERVICE_NAME = "gateway"
DEFAULT_PORT = 8080
DEFAULT_WORKER_URL = "http://127.0.0.1:8081"

# Every variable the gateway reads itself (tandem_telemetry.ENV_VARS lists the telemetry ones).
ENV_VARS = frozenset({*SERVER_ENV_VARS, "WORKER_URL", "WORKER_TIMEOUT"})


@dataclass(frozen=True)
class Settings:
    worker_url: str = DEFAULT_WORKER_URL
    # Total budget for one call to the worker, retries included.
    worker_timeout: float = 5.0

    @classmethod
    def from_env(cls) -> Settings:
        raw_timeout = os.environ.get("WORKER_TIMEOUT", "").strip()
        try:
            timeout = float(raw_timeout) if raw_timeout else cls.worker_timeout
        except ValueError:
            raise ValueError(f"WORKER_TIMEOUT={raw_timeout!r} is not a number of seconds") from None
        if timeout <= 0:
            raise ValueError(f"WORKER_TIMEOUT={raw_timeout!r} must be greater than 0")
        return cls(
            worker_url=os.environ.get("WORKER_URL", DEFAULT_WORKER_URL).rstrip("/"),
            worker_timeout=timeout,
        )
