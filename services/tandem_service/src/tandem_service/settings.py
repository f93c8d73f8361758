"""The server's settings, from the environment: where to listen, how many processes, how to stop."""

from __future__ import annotations

from dataclasses import dataclass

from tandem_telemetry.env import env_flag, env_int, env_str

# Read by every service's __main__; a service lists these beside its own in its ENV_VARS.
SERVER_ENV_VARS = ("HOST", "PORT", "WEB_CONCURRENCY", "GRACEFUL_TIMEOUT", "RELOAD")
DEFAULT_HOST = "0.0.0.0"


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    # Server processes; more than one share the listening sockets.
    web_concurrency: int = 1
    # Seconds in-flight requests get to finish after SIGTERM.
    graceful_timeout: int = 10
    # Restart when a source file changes: the skaffold dev loop.
    reload: bool = False

    @classmethod
    def from_env(cls, default_port: int) -> ServerSettings:
        """Read SERVER_ENV_VARS; InvalidEnvVar names any malformed one."""
        return cls(
            host=env_str("HOST", DEFAULT_HOST),
            port=env_int("PORT", default_port, maximum=65535),
            web_concurrency=env_int("WEB_CONCURRENCY", cls.web_concurrency),
            graceful_timeout=env_int("GRACEFUL_TIMEOUT", cls.graceful_timeout, minimum=0),
            reload=env_flag("RELOAD"),
        )
