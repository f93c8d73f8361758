"""A traced, retrying httpx client: tracing and retries live in the transport."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from time import monotonic, time_ns
from typing import Any

import httpx
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tandem_telemetry.bootstrap import Telemetry, current, setup
from tandem_telemetry.middleware import KNOWN_METHODS

logger = logging.getLogger(__name__)

# Seconds an idle pooled connection is kept: under the servers' 5 s keep-alive
# timeout, so the client never sends on a connection the server is closing.
KEEPALIVE_EXPIRY = 4.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class TotalTimeout(httpx.TimeoutException):
    """The request, retries included, outlasted its total time budget."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter.

    A request whose connection could not be established is always retried:
    nothing was sent, so even a POST is safe. Idempotent requests are also
    retried on errors after sending, and on a 503 without `Retry-After`. A
    503 with `Retry-After` is a server shedding load and saying when to come
    back: it goes to the caller at once, never retried sooner, so that
    retries do not multiply the load on a server that has too much.
    """

    attempts: int = 3
    backoff: float = 0.05
    max_backoff: float = 1.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (retry - 1)))


@dataclass(frozen=True)
class Timeouts:
    """Explicit client timeouts in seconds: to connect, between bytes read, for the whole call."""

    connect: float = 1.0
    read: float = 5.0
    total: float = 10.0


class TracingTransport(httpx.AsyncBaseTransport):
    """Wrap a transport: one CLIENT span per attempt, context injected, retries per `RetryPolicy`.

    Each attempt starts a CLIENT span as a child of the current span, injects
    that span's context into the request headers with the configured
    propagators (OTEL_PROPAGATORS), sends, and ends the span when the
    response body has been read.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        retry: RetryPolicy = RetryPolicy(),
        total_timeout: float | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._transport = transport
        self._retry = retry
        self._total_timeout = total_timeout
        self._telemetry = telemetry

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # current() is setup()'s answer once there is a pipeline, without its lock.
        telemetry = self._telemetry or current() or setup()
        if request.url.userinfo:
            # httpx has already turned URL credentials into an Authorization
            # header; aiohttp refuses a request that carries both.
            request.url = request.url.copy_with(username=None, password=None)
        deadline = None if self._total_timeout is None else monotonic() + self._total_timeout
        idempotent = request.method in IDEMPOTENT_METHODS
        # What every attempt's span and metric say about the target, worked out once per request.
        target = _Target(request) if telemetry.enabled else None
        attempt = 0
        while True:
            span, start = self._start_attempt(telemetry, request, target, attempt)
            try:
                response = await self._send_within(request, deadline)
            except asyncio.CancelledError as exc:
                # The caller gave up (say, its own client left): the attempt, and its span, end.
                _end_span(telemetry, span, start, target, None, _error_type(exc))
                raise
            except Exception as exc:
                _end_span(telemetry, span, start, target, None, _error_type(exc))
                if attempt + 1 < self._retry.attempts and (
                    _nothing_sent(exc) or (idempotent and _is_transport_error(exc))
                ):
                    attempt += 1
                    await self._backoff(attempt, deadline, request)
                    continue
                raise
            if (
                response.status_code == 503
                and idempotent
                and attempt + 1 < self._retry.attempts
                and "retry-after" not in response.headers
            ):
                await response.aclose()
                _end_span(telemetry, span, start, target, 503, "503")
                attempt += 1
                await self._backoff(attempt, deadline, request)
                continue
            # The span ends when the body has been read, so it covers the whole exchange.
            if span is None:
                return response
            # An async transport answers with an async stream; httpx.AsyncClient asserts the same.
            assert isinstance(response.stream, httpx.AsyncByteStream)
            response.stream = _SpanEndingStream(
                response.stream, telemetry, span, start, target, response.status_code
            )
            return response

    def _start_attempt(
        self, telemetry: Telemetry, request: httpx.Request, target: _Target | None, attempt: int
    ) -> tuple[Span | None, int]:
        start = time_ns()
        if target is None:
            # OTEL_SDK_DISABLED: no span, but the current context (the caller's) goes on.
            _inject(request, None)
            return None, start
        attributes = target.span_attributes()
        if attempt:
            attributes["http.request.resend_count"] = attempt
        span = telemetry.tracer.start_span(
            target.span_name, None, SpanKind.CLIENT, attributes, None, start
        )
        # The callee continues this attempt's span: its context, and the current baggage.
        _inject(request, trace.set_span_in_context(span))
        return span, start

    async def _send_within(self, request: httpx.Request, deadline: float | None) -> httpx.Response:
        try:
            if deadline is None:
                return await self._transport.handle_async_request(request)
            async with asyncio.timeout(deadline - monotonic()):
                return await self._transport.handle_async_request(request)
        except TimeoutError:
            raise TotalTimeout(
                f"no response within the total timeout of {self._total_timeout}s", request=request
            ) from None
        except httpx.TransportError as exc:
            raise _precise(exc, request) from exc.__cause__

    async def _backoff(self, retry: int, deadline: float | None, request: httpx.Request) -> None:
        delay = self._retry.delay(retry)
        if deadline is not None and monotonic() + delay >= deadline:
            raise TotalTimeout(
                f"retries exceeded the total timeout of {self._total_timeout}s", request=request
            )
        await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self._transport.aclose()


def _inject(request: httpx.Request, context: Context | None) -> None:
    try:
        propagate.inject(request.headers, context=context)
    except Exception:  # a propagator failing must not fail the call
        logger.debug("context injection failed; the request goes without it", exc_info=True)


class _Target:
    """The attributes a CLIENT span and its duration metric give the request's target."""

    __slots__ = ("_common", "_url_full", "span_name")

    def __init__(self, request: httpx.Request) -> None:
        url = request.url
        method = request.method if request.method in KNOWN_METHODS else "_OTHER"
        scheme, host = url.scheme, url.host
        port = url.port or (443 if scheme == "https" else 80)
        self.span_name = "HTTP" if method == "_OTHER" else method
        self._common: dict[str, str | int] = {
            "http.request.method": method,
            "server.address": host,
            "server.port": port,
        }
        # Never the query or userinfo: they may carry secrets.
        self._url_full = f"{scheme}://{host}:{port}{url.path}"

    def span_attributes(self) -> dict[str, str | int]:
        attributes = self._common.copy()
        attributes["url.full"] = self._url_full
        return attributes

    def metric_attributes(self) -> dict[str, str | int]:
        return self._common.copy()


class _SpanEndingStream(httpx.AsyncByteStream):
    """A response body stream that ends the attempt's span when the body is closed."""

    def __init__(
        self,
        stream: httpx.AsyncByteStream,
        telemetry: Telemetry,
        span: Span | None,
        start: int,
        target: _Target | None,
        status: int,
    ) -> None:
        self._stream = stream
        self._telemetry = telemetry
        self._span = span
        self._start = start
        self._target = target
        self._status = status
        self._error: str | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:
            self._error = _error_type(exc)
            raise

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._span is not None:
                error = self._error or (str(self._status) if self._status >= 400 else None)
                _end_span(
                    self._telemetry, self._span, self._start, self._target, self._status, error
                )
                self._span = None


def _end_span(
    telemetry: Telemetry,
    span: Span | None,
    start: int,
    target: _Target | None,
    status: int | None,
    error_type: str | None,
) -> None:
    if span is None or target is None:
        return
    end = time_ns()
    # The span already carries the method and the server's address and port
    # from its start; it gets only the outcome. The metric gets all of them.
    outcome: dict[str, str | int] = {}
    if status is not None:
        outcome["http.response.status_code"] = status
    if error_type is not None:
        outcome["error.type"] = error_type
        span.set_status(Status(StatusCode.ERROR))
    if outcome:
        span.set_attributes(outcome)
    span.end(end)
    attributes = target.metric_attributes()
    attributes.update(outcome)
    telemetry.client_duration.record((end - start) / 1e9, attributes)


def _error_type(exc: BaseException) -> str:
    return type(exc).__name__


def _is_transport_error(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError) and not isinstance(exc, TotalTimeout)


def _nothing_sent(exc: BaseException) -> bool:
    """True when the connection was never established, so the server saw nothing."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))


def _precise(exc: httpx.TransportError, request: httpx.Request) -> httpx.TransportError:
    """Re-map httpx-aiohttp's errors by their aiohttp cause.

    httpx-aiohttp maps every aiohttp connection error to ConnectTimeout: a
    refused connection and a server that hung up after the request was sent
    alike. Retry safety and the gateway's 503-versus-504 choice need the
    difference, which only the cause still carries.
    """
    cause = exc.__cause__
    if cause is None or type(cause).__module__.split(".")[0] != "aiohttp":
        return exc
    import aiohttp

    message = str(exc)
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(cause, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(
        cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)
    ):
        return httpx.ReadError(message, request=request)
    return exc


class _Cookies(httpx.Cookies):
    """httpx's cookie jar, minus its cost when a response sets no cookie.

    httpx hands every response to the standard library's CookieJar through
    urllib.request.Request and http.client shims, which parse the URL (host
    included, through ipaddress) whether or not there is a cookie to take.
    The jar only ever reads Set-Cookie and Set-Cookie2, so a response
    without either is skipped, with the same outcome.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        for name, _ in response.headers.raw:
            if name.lower() in _SET_COOKIE:
                super().extract_cookies(response)
                return


_SET_COOKIE = frozenset({b"set-cookie", b"set-cookie2"})


class _Client(httpx.AsyncClient):
    """The httpx.AsyncClient `create_client` returns: httpx's, with two per-request costs taken out.

    - Response cookies are extracted only from responses that set one (`_Cookies`).
    - A relative URL is joined to `base_url` once, not on every request: the
      join re-parses the whole URL each time. The cache holds immutable
      httpx.URL objects, keyed by the URL string and checked against the
      base URL they were joined to; it is bounded, for callers that put ids
      in paths.

    Everything else, the API included, is httpx.AsyncClient's. Both hooks
    are httpx internals (`_merge_url`, the cookie jar's `extract_cookies`);
    should a later httpx drop them, these overrides go unused, and nothing
    else changes.
    """

    _MERGED_URLS_MAX = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._merged_urls: dict[str, tuple[httpx.URL, httpx.URL]] = {}
        super().__init__(*args, **kwargs)
        self._cookies = _Cookies(self._cookies)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: httpx._types.CookieTypes) -> None:
        self._cookies = _Cookies(cookies)

    def _merge_url(self, url: httpx.URL | str) -> httpx.URL:
        if type(url) is not str:
            return super()._merge_url(url)
        base = self._base_url
        cached = self._merged_urls.get(url)
        if cached is not None and cached[0] is base:
            return cached[1]
        merged = super()._merge_url(url)
        if len(self._merged_urls) >= self._MERGED_URLS_MAX:
            self._merged_urls.clear()
        self._merged_urls[url] = (base, merged)
        return merged


def create_client(
    base_url: str = "",
    *,
    timeouts: Timeouts = Timeouts(),
    retry: RetryPolicy = RetryPolicy(),
    max_connections: int = 100,
    telemetry: Telemetry | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """Return an httpx.AsyncClient that traces, propagates context and retries.

    The wire transport is aiohttp's (httpx-aiohttp): several times httpx's
    default under concurrency, with httpx's API kept. Pass `transport` to
    use another one.
    """
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )
    if transport is None:
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    return _Client(
        base_url=base_url,
        transport=TracingTransport(
            transport, retry=retry, total_timeout=timeouts.total, telemetry=telemetry
        ),
        timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=timeouts.connect),
        limits=limits,
    )
