"""Requests a service refuses: malformed Host headers and targets, out-of-range parameters."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tandem_service.errors import BadRequest, json_error

# A query integer: ASCII digits only (int() would also take non-ASCII digits, "1_0" and " 1 "),
# and few enough of them that no valid range is ever exceeded by accident.
_INT = re.compile(r"-?[0-9]{1,18}")
# RFC 9110 §7.2 / RFC 3986 §3.2.2: Host = uri-host [ ":" port ].
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::([0-9]{0,5}))?")


def int_param(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    """A query parameter as an int within [low, high], or BadRequest(422) naming it."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = int(raw) if _INT.fullmatch(raw) else None
    if value is None or not low <= value <= high:
        raise BadRequest(
            422,
            "invalid_parameter",
            f"{name} must be an integer from {low} to {high}",
            parameter=name,
            value=raw,
        )
    return value


class RequestGuard:
    """What RFC 9112 §3.2 asks of a server before any route, span or log sees a request.

    - A Host header that is not `host[:port]`, or more than one, gets a 400.
      The tracing middleware would otherwise record (or choke on) whatever
      bytes it holds, e.g. a port of "²" or of 30 digits.
    - An absolute-form target (`GET http://user:pass@host/path`) is served
      as its path: hypercorn hands the whole URL over as the path, which
      would put the URL's credentials into `url.path` and then answer 404.

    Add it after `instrument(...)`, so that it runs first.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hosts = [value for name, value in scope["headers"] if name == b"host"]
            if len(hosts) > 1 or (hosts and not _valid_host(hosts[0])):
                response = json_error(
                    400, "invalid_host", "send exactly one Host header of the form host[:port]"
                )
                await response(scope, receive, send)
                return
            if not scope["path"].startswith("/"):
                scope = _origin_form(scope)
        await self.app(scope, receive, send)


def _valid_host(value: bytes) -> bool:
    match = _HOST.fullmatch(value)
    return match is not None and int(match.group(1) or 0) <= 65535


def _origin_form(scope: Scope) -> Scope:
    """Reduce an absolute-form target to its path (RFC 9112 §3.2.2); leave other forms alone."""
    raw = scope.get("raw_path") or scope["path"].encode()
    if not raw[:8].lower().startswith((b"http://", b"https://")):
        return scope
    path = urlsplit(raw.decode("ascii", "replace")).path or "/"
    return {**scope, "path": unquote(path), "raw_path": path.encode("ascii", "replace")}
