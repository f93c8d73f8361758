"""An admission limit: a bounded amount of work in flight; a request beyond it is shed at once.

A request beyond the limit is answered 503 straight away, with a JSON body
and `Retry-After`, and never waits behind the requests already admitted, so
that those finish in good time (see docs/benchmarks.md, Overload, for what
this buys and how the default limits were chosen). Health checks, and any
path a service exempts, are never shed: a probe must tell an overloaded pod
from a dead one, and a peer's callback may be what an admitted request is
waiting on.

Add it before `instrument(...)`, so that it runs inside the tracing
middleware: a shed request still gets its SERVER span, with status 503 and
`error.type` = `load_shed`, and is counted on `tandem.server.requests.shed`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from tandem_service.health import HEALTH_PATHS
from tandem_telemetry import ERROR_TYPE_KEY, Telemetry, current
from tandem_telemetry.env import env_int
from tandem_telemetry.middleware import KNOWN_METHODS

# The setting each service reads, with its own default (see its settings module).
ADMISSION_ENV_VARS = ("MAX_IN_FLIGHT",)
# error.type of a shed request's SERVER span and duration metric: refused by design, not failed.
SHED_ERROR_TYPE = "load_shed"
SHED_COUNTER = "tandem.server.requests.shed"
# Seconds a shed client is asked to wait. Whole seconds: the only unit Retry-After has.
DEFAULT_RETRY_AFTER = 1
# Distinct (path, method) pairs whose route is remembered for the shed path.
_ROUTE_CACHE_LIMIT = 256


def max_in_flight_from_env(default: int) -> int:
    """MAX_IN_FLIGHT: the admission limit of one server process; 0 turns it off."""
    return env_int("MAX_IN_FLIGHT", default, minimum=0)


# What a request weighs against the limit, from its scope (1 when not given).
Cost = Callable[[Scope], int]


class AdmissionLimit:
    """Admit requests while the work in flight is within `limit`; answer the rest 503 at once.

    Each request weighs 1, or what `cost(scope)` says: the gateway weighs an
    /api/work request by the worker tasks it fans out to, so that its limit
    is on the work it sends downstream, whatever the mix of requests. A
    request heavier than the whole limit weighs the limit: it is admitted
    when nothing else is in flight. `limit` 0 admits everything. Paths in
    `exempt_paths` (the health endpoints by default) and under
    `exempt_prefixes` are neither counted nor shed. The count is per server
    process: one event loop, so a plain integer, no lock.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        cost: Cost | None = None,
        retry_after: int = DEFAULT_RETRY_AFTER,
        exempt_paths: Iterable[str] = HEALTH_PATHS,
        exempt_prefixes: tuple[str, ...] = (),
        telemetry: Telemetry | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        self._cost = cost
        self._exempt_paths = frozenset(exempt_paths)
        self._exempt_prefixes = exempt_prefixes
        self._telemetry = telemetry
        # Sheds by (method, route template), and the pipeline they are published on.
        self._shed_counts: dict[tuple[str, str | None], int] = {}
        self._published_on: Telemetry | None = None
        self._routes: dict[tuple[str, str], BaseRoute | None] = {}
        body = json.dumps(
            {
                "error": "overloaded",
                "detail": (
                    "the service is at its limit of work in flight and did not start this "
                    f"request; retry after {retry_after} s"
                ),
                "retry_after": retry_after,
            },
            separators=(",", ":"),
        ).encode()
        self._headers = (
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        )
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.limit
            or scope["type"] != "http"
            or scope["path"] in self._exempt_paths
            or (self._exempt_prefixes and scope["path"].startswith(self._exempt_prefixes))
        ):
            await self.app(scope, receive, send)
            return
        cost = 1 if self._cost is None else max(1, min(self._cost(scope), self.limit))
        if self.in_flight + cost > self.limit:
            await self._shed(scope, send)
            return
        self.in_flight += cost
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= cost

    async def _shed(self, scope: Scope, send: Send) -> None:
        """Answer 503 without reading the body or running the route; say why to the span."""
        route = self._route(scope)
        if route is not None:
            # The SERVER span is named, and the duration metric labelled, by
            # the route the request asked for, as an admitted one would be.
            scope["route"] = route
        scope[ERROR_TYPE_KEY] = SHED_ERROR_TYPE
        # Counted here, published when metrics are exported (_observe_sheds): a shed costs the
        # process as much as a small request already, and an SDK Counter.add would add to it.
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "_OTHER"
        key = (method, getattr(route, "path", None))
        self._shed_counts[key] = self._shed_counts.get(key, 0) + 1
        self._publish_sheds()
        # Fresh messages: a server or middleware may add headers to the one it is given.
        await send({"type": "http.response.start", "status": 503, "headers": list(self._headers)})
        await send({"type": "http.response.body", "body": self._body})

    def _route(self, scope: Scope) -> BaseRoute | None:
        """The route of the app (a Starlette app, from `scope["app"]`) this request would take."""
        key = (scope["path"], scope["method"])
        if key in self._routes:
            return self._routes[key]
        # As Starlette's router chooses: the first full match, else the first partial one
        # (the path matches, the method does not).
        found = None
        for route in getattr(scope.get("app"), "routes", ()):
            match, _ = route.matches(scope)
            if match is Match.FULL:
                found = route
                break
            if match is Match.PARTIAL and found is None:
                found = route
        if len(self._routes) < _ROUTE_CACHE_LIMIT:
            self._routes[key] = found
        return found

    def _publish_sheds(self) -> None:
        """Register the shed counter on this process's pipeline, once (none without a pipeline)."""
        telemetry = self._telemetry or current()
        if telemetry is None or telemetry is self._published_on:
            return
        telemetry.meter.create_observable_counter(
            SHED_COUNTER,
            callbacks=[self._observe_sheds],
            unit="{request}",
            description="Requests answered 503 at once: the admission limit was reached.",
        )
        self._published_on = telemetry

    def _observe_sheds(self, options: CallbackOptions) -> list[Observation]:
        observations = []
        # A copy: the event loop's thread may count a shed while the exporter's reads.
        for (method, template), count in list(self._shed_counts.items()):
            attributes = {"http.request.method": method}
            if template:
                attributes["http.route"] = template
            observations.append(Observation(count, attributes))
        return observations
