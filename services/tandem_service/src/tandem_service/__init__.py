"""What Tandem's services share as services, apart from their telemetry.

    from tandem_service import AdmissionLimit, HEALTH_ROUTES, RequestGuard, serve

- `AdmissionLimit`: at most MAX_IN_FLIGHT requests at once, the rest shed with a 503;
- `serve`: hypercorn with uvloop, one app per `Listener` (PORT, and any other
  port a service listens on), configured from HOST, WEB_CONCURRENCY,
  GRACEFUL_TIMEOUT and RELOAD (SERVER_ENV_VARS), stopping with one drain; a
  request whose client leaves is cancelled (error.type CLIENT_GONE_ERROR_TYPE);
- JSON errors (`BadRequest`, `json_error`, `EXCEPTION_HANDLERS`);
- `/healthz` and `/readyz` (`HEALTH_ROUTES`);
- request validation (`int_param`, `RequestGuard`).
"""

from tandem_service.admission import (
    ADMISSION_ENV_VARS,
    SHED_COUNTER,
    SHED_ERROR_TYPE,
    AdmissionLimit,
    max_in_flight_from_env,
)
from tandem_service.errors import EXCEPTION_HANDLERS, BadRequest, json_error
from tandem_service.health import HEALTH_PATHS, HEALTH_ROUTES
from tandem_service.serving import CLIENT_GONE_ERROR_TYPE, serve
from tandem_service.settings import SERVER_ENV_VARS, Listener, ServerSettings
from tandem_service.validation import RequestGuard, int_param

__all__ = [
    "ADMISSION_ENV_VARS",
    "CLIENT_GONE_ERROR_TYPE",
    "EXCEPTION_HANDLERS",
    "HEALTH_PATHS",
    "HEALTH_ROUTES",
    "SERVER_ENV_VARS",
    "SHED_COUNTER",
    "SHED_ERROR_TYPE",
    "AdmissionLimit",
    "BadRequest",
    "Listener",
    "RequestGuard",
    "ServerSettings",
    "int_param",
    "json_error",
    "max_in_flight_from_env",
    "serve",
]
