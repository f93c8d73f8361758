"""Server spans for HTTP requests: a plain ASGI middleware, one SERVER span per request."""

from __future__ import annotations

import logging
import re
from time import time_ns
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tandem_telemetry.bootstrap import Telemetry, setup
from tandem_telemetry.propagation import ASGIHeaders, asgi_getter, format_traceparent

logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PORT = re.compile(r"[0-9]{1,5}")
# Distinct (path, Host, client address, user agent...) combinations whose span attributes are
# cached.
ATTRIBUTE_SETS_LIMIT = 1024
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
# A scope key an inner middleware or app sets to say why it answered as it did, e.g.
# `scope[ERROR_TYPE_KEY] = "load_shed"`: the span and the duration metric get it as error.type
# (and the span an ERROR status) instead of the bare status code.
ERROR_TYPE_KEY = "tandem.error_type"


class TracingMiddleware:
    """Trace each HTTP request from its arrival to the last byte of its response body.

    Extracts the caller's context with the configured propagators
    (OTEL_PROPAGATORS), starts a SERVER span in it (or, with untrusted
    context, a new trace linked to it), runs the app inside that span, and
    ends the span at the last body byte. It names the span "{METHOD} {route template}",
    records http.server.request.duration, and returns a `traceresponse`
    header. The pipeline is set up on first use, which is in the serving
    process: Starlette builds its middleware stack on the first ASGI call.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service_name: str | None = None,
        service_version: str | None = None,
        telemetry: Telemetry | None = None,
        trust_incoming_context: bool = False,
    ) -> None:
        """trust_incoming_context=True keeps the caller's context whatever
        TANDEM_UNTRUSTED_CONTEXT says: for an app on a listener that only
        Tandem's own services can reach. Trust follows the listener, never the
        path: a path is whatever the caller writes.
        """
        self.app = app
        self.telemetry = telemetry or setup(service_name, service_version=service_version)
        settings = self.telemetry.settings
        # None when the SDK is disabled: requests then get no span, but their context flows on.
        self._tracer = self.telemetry.tracer if self.telemetry.enabled else None
        self._duration = self.telemetry.server_duration
        self._untraced = settings.untraced_paths
        self._trust = trust_incoming_context or not settings.untrusted_context
        # The headers the configured propagators read (setup() installed them just above).
        self._propagation_fields = frozenset(
            name.lower().encode("latin-1") for name in propagate.get_global_textmap().fields
        )
        # Requests repeat the same path, Host, client address and user agent;
        # their attributes are worked out once per combination (bounded).
        self._attribute_sets: dict[tuple[object, ...], dict[str, str | int]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._untraced:
            await self.app(scope, receive, send)
            return
        tracer = self._tracer
        if tracer is None:
            await self._propagate_only(scope, receive, send)
            return

        start = time_ns()
        # 1. Extract: one pass over the header list; the propagators read from it.
        headers = ASGIHeaders(scope["headers"])
        parent, links = self._extract(headers)

        method = scope["method"]
        if method not in KNOWN_METHODS:
            method = "_OTHER"
        attributes = self._cached_request_attributes(
            scope, method, headers.first(b"host"), headers.first(b"user-agent")
        )
        # 2. Start the SERVER span in the caller's context, and make it current for the app.
        span = tracer.start_span(
            "HTTP" if method == "_OTHER" else method,
            parent,
            SpanKind.SERVER,
            attributes,
            links,
            start,
        )
        token = attach(trace.set_span_in_context(span, parent))
        status_code = 0
        ended = False

        def finish(error_type: str | None, *, answered: bool = True) -> None:
            nonlocal ended
            ended = True
            end = time_ns()
            route = scope.get("route")
            template: str | None = getattr(route, "path", None) if route is not None else None
            code = status_code or 500
            # The span has had the method, scheme and protocol version since
            # its start; it gets only the outcome. The metric gets all of them.
            outcome: dict[str, str | int] = {"http.response.status_code": code} if answered else {}
            if template:
                outcome["http.route"] = template
                span.update_name(
                    f"{method} {template}" if method != "_OTHER" else f"HTTP {template}"
                )
            if error_type is None:
                error_type = scope.get(ERROR_TYPE_KEY)
            if error_type is None and code >= 500:
                error_type = str(code)
            if error_type is not None:
                outcome["error.type"] = error_type
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(outcome)
            span.end(end)
            metric_attributes: dict[str, str | int] = {
                "http.request.method": method,
                "url.scheme": scope["scheme"],
                "network.protocol.version": scope["http_version"],
            }
            metric_attributes.update(outcome)
            self._duration.record((end - start) / 1e9, metric_attributes)

        async def send_traced(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                traceresponse = format_traceparent(span.get_span_context()).encode()
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"traceresponse", traceresponse),
                ]
                await send(message)
                return
            await send(message)
            if (
                not ended
                and message["type"] == "http.response.body"
                and not message.get("more_body", False)
            ):
                finish(None)

        # 3. Run the app; 4. the span ends with the last body byte (finish).
        try:
            await self.app(scope, receive, send_traced)
        except Exception as exc:
            if not ended:
                span.record_exception(exc)
                finish(_qualified_name(type(exc)))
            raise
        finally:
            detach(token)
            if not ended:
                # Cancelled, or the app returned without a full response. A request cancelled
                # because its client left says so in the scope (tandem_service's serving layer);
                # if nothing had been sent, it gets no status code: none was answered.
                reason = scope.get(ERROR_TYPE_KEY)
                if reason is not None:
                    finish(reason, answered=bool(status_code))
                else:
                    finish(None if status_code else "incomplete_response")

    def _extract(self, headers: ASGIHeaders) -> tuple[Context, list[Link] | None]:
        """The caller's context, and with untrusted context a link to it instead."""
        try:
            parent = propagate.extract(headers, context=Context(), getter=asgi_getter)
        except Exception:  # a propagator that fails on odd input must not fail the request
            logger.debug("context extraction failed; the request starts a new trace", exc_info=True)
            return Context(), None
        if self._trust:
            return parent, None
        # Untrusted: the caller's trace is worth a link, not a parent; its baggage is dropped.
        caller = trace.get_current_span(parent).get_span_context()
        return Context(), [Link(caller)] if caller.is_valid else None

    async def _propagate_only(self, scope: Scope, receive: Receive, send: Send) -> None:
        """OTEL_SDK_DISABLED: no span and no metric, but the caller's context stays current.

        As with OpenTelemetry's own disabled SDK, whose spans are then non-recording
        spans of the caller's context: the client passes that context (and the
        baggage) on, and `traceresponse` names it, so a service with its SDK off
        does not cut the traces that pass through it.
        """
        fields = self._propagation_fields
        if not any(name in fields for name, _ in scope["headers"]):
            await self.app(scope, receive, send)  # nothing to carry on
            return
        context, _ = self._extract(ASGIHeaders(scope["headers"]))
        span_context = trace.get_current_span(context).get_span_context()
        token = attach(context)
        try:
            if not span_context.is_valid:
                await self.app(scope, receive, send)
                return
            traceresponse = (b"traceresponse", format_traceparent(span_context).encode())

            async def send_with_traceresponse(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), traceresponse]
                await send(message)

            await self.app(scope, receive, send_with_traceresponse)
        finally:
            detach(token)

    def _cached_request_attributes(
        self, scope: Scope, method: str, host: bytes | None, user_agent: bytes | None
    ) -> dict[str, str | int]:
        """The span's request attributes: a fresh dict, from a bounded cache."""
        client = scope.get("client")
        key = (
            scope["path"],
            scope["method"],
            scope["scheme"],
            scope["http_version"],
            host,
            user_agent,
            client[0] if client else None,
            scope.get("server") if host is None else None,
        )
        cached = self._attribute_sets.get(key)
        if cached is None:
            cached = _request_attributes(scope, method, host, user_agent)
            if len(self._attribute_sets) < ATTRIBUTE_SETS_LIMIT:
                self._attribute_sets[key] = cached
        return cached.copy()


def _request_attributes(
    scope: Scope, method: str, host: bytes | None, user_agent: bytes | None
) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        # An absolute-form target arrives whole, userinfo and all; only its path is the path.
        "url.path": path
        if (path := scope["path"]).startswith("/")
        else (urlsplit(path).path or "/"),
        "url.scheme": scope["scheme"],
        "network.protocol.version": scope["http_version"],
    }
    if method == "_OTHER":
        attributes["http.request.method_original"] = scope["method"]
    if host is not None:
        address, port = _split_host(host.decode("latin-1"))
        attributes["server.address"] = address
        attributes["server.port"] = port or _DEFAULT_PORTS.get(scope["scheme"], 0)
    elif scope.get("server"):
        attributes["server.address"], attributes["server.port"] = (
            scope["server"][0],
            scope["server"][1],
        )
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    if user_agent is not None:
        attributes["user_agent.original"] = user_agent.decode("latin-1")
    return attributes


def _split_host(host: str) -> tuple[str, int | None]:
    """Split a Host header into address and port; IPv6 literals lose their brackets.

    The header is the client's to write: a port that is not 1-5 ASCII digits
    within 1..65535 (OTLP's int64 could not even carry some) is no port, and
    the whole value stays the address.
    """
    name, sep, port = host.rpartition(":")
    if (
        sep
        and _PORT.fullmatch(port)
        and 0 < int(port) < 65536
        and not (name.startswith("[") and not name.endswith("]"))
    ):
        return name.strip("[]"), int(port)
    return host.strip("[]"), None


def _qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
