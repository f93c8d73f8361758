"""The server's settings, from the environment: where to listen, how many processes, how to stop."""

from __future__ import annotations

from dataclasses import dataclass

from tandem_telemetry.env import env_flag, env_int, env_str

# Read by every service's __main__; a service lists these beside its own in its ENV_VARS.
SERVER_ENV_VARS = ("HOST", "PORT", "WEB_CONCURRENCY", "GRACEFUL_TIMEOUT", "RELOAD")
DEFAULT_HOST = "0.0.0.0"


@dataclass(frozen=True)
class Listener:
    """A port a service listens on: the variable that sets it, and its default.

    Every service has the public one, `Listener.public(DEFAULT_PORT)` (PORT);
    the gateway adds one that only Tandem's own services may reach.
    """

    port_variable: str
    default_port: int

    @classmethod
    def public(cls, default_port: int) -> Listener:
        return cls("PORT", default_port)

    def port_from_env(self) -> int:
        """The port; InvalidEnvVar names a malformed one."""
        return env_int(self.port_variable, self.default_port, maximum=65535)


@dataclass(frozen=True)
class ServerSettings:
    host: str = DEFAULT_HOST
    # Server processes; more than one share the listening sockets.
    web_concurrency: int = 1
    # Seconds in-flight requests get to finish after SIGTERM.
    graceful_timeout: int = 10
    # Restart when a source file changes: the skaffold dev loop.
    reload: bool = False

    @classmethod
    def from_env(cls) -> ServerSettings:
        """Read SERVER_ENV_VARS but PORT (see Listener); InvalidEnvVar names a malformed one."""
        return cls(
            host=env_str("HOST", DEFAULT_HOST),
            web_concurrency=env_int("WEB_CONCURRENCY", cls.web_concurrency),
            graceful_timeout=env_int("GRACEFUL_TIMEOUT", cls.graceful_timeout, minimum=0),
            reload=env_flag("RELOAD"),
        )
