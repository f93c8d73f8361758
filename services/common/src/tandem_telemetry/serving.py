"""Run a service's ASGI app under hypercorn, configured from the environment."""

from __future__ import annotations

import os

from hypercorn.config import Config
from hypercorn.run import run

# Read by every service's __main__; a service lists these beside its own in its ENV_VARS.
SERVER_ENV_VARS = ("HOST", "PORT", "WEB_CONCURRENCY", "GRACEFUL_TIMEOUT", "RELOAD")


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise SystemExit(f"{name}={raw!r}: expected a whole number >= {minimum}")
    return int(raw)


def server_config(application_path: str, default_port: int) -> Config:
    """Hypercorn settings for a service: bind from HOST/PORT, uvloop workers, graceful stop.

    WEB_CONCURRENCY=1 (the default) serves in this process, so there is no
    idle parent; more spawns that many worker processes, each with its own
    telemetry pipeline, and the parent exports nothing. RELOAD=true (the
    skaffold dev loop) restarts workers when a source file changes.
    """
    config = Config()
    config.application_path = application_path
    host = os.environ.get("HOST", "0.0.0.0").strip() or "0.0.0.0"
    port = _env_int("PORT", default_port, 1)
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.worker_class = "uvloop"
    workers = _env_int("WEB_CONCURRENCY", 1, 1)
    config.use_reloader = os.environ.get("RELOAD", "").strip().lower() == "true"
    config.workers = 0 if workers == 1 and not config.use_reloader else workers
    config.graceful_timeout = float(_env_int("GRACEFUL_TIMEOUT", 10, 0))
    # Spans already record every request; an access log line per request would double the cost.
    config.accesslog = None
    config.errorlog = "-"
    config.keep_alive_timeout = 75
    return config


def serve(application_path: str, default_port: int) -> int:
    """Serve `module:attribute` until SIGTERM or SIGINT, then drain in-flight requests and exit."""
    return run(server_config(application_path, default_port))
