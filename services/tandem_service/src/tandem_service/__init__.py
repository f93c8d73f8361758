"""What Tandem's services share as services, apart from their telemetry.

    from tandem_service import EXCEPTION_HANDLERS, HEALTH_ROUTES, RequestGuard, serve

- `serve`: hypercorn with uvloop, one app per `Listener` (PORT, and any other
  port a service listens on), configured from HOST, WEB_CONCURRENCY,
  GRACEFUL_TIMEOUT and RELOAD (SERVER_ENV_VARS), stopping with one drain;
- JSON errors (`BadRequest`, `json_error`, `EXCEPTION_HANDLERS`);
- `/healthz` and `/readyz` (`HEALTH_ROUTES`);
- request validation (`int_param`, `RequestGuard`).
"""

from tandem_service.errors import EXCEPTION_HANDLERS, BadRequest, json_error
from tandem_service.health import HEALTH_ROUTES
from tandem_service.serving import serve
from tandem_service.settings import SERVER_ENV_VARS, Listener, ServerSettings
from tandem_service.validation import RequestGuard, int_param

__all__ = [
    "EXCEPTION_HANDLERS",
    "HEALTH_ROUTES",
    "SERVER_ENV_VARS",
    "BadRequest",
    "Listener",
    "RequestGuard",
    "ServerSettings",
    "int_param",
    "json_error",
    "serve",
]
