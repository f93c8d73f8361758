"""A small client for the part of Tempo's HTTP API the checks use: trace by id.

It speaks to Tempo 3.0.3, the version the chart pins, and to tandem_collector, which
answers the same way:

- ``GET /api/v2/traces/<id>`` answers 200 whether or not Tempo holds the trace; a trace
  it does not hold (yet) comes back empty, ``{"trace":{},"metrics":{}}``;
- errors come back with a plain-text body, not JSON.
"""

from __future__ import annotations

import time

import httpx

from tandem_tracecheck.spans import Span, parse_trace

# Enough of an error body to say what went wrong, not a whole HTML page.
ERROR_BODY_CHARS = 500


class TempoError(RuntimeError):
    """Tempo answered something other than a trace."""


class TempoClient:
    """Fetch traces from Tempo (or tandem_collector, which serves the same API)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TempoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ready(self) -> bool:
        try:
            return self._http.get("/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def trace(self, trace_id: str) -> list[Span]:
        """The spans Tempo holds for the trace: none while it has not (yet) received any.

        Raises :class:`TempoError` with the status and Tempo's (plain-text) body for any
        answer but 200, and for a 200 whose body is not a trace.
        """
        path = f"/api/v2/traces/{trace_id}"
        response = self._http.get(path)
        if response.status_code != 200:
            raise TempoError(
                f"GET {path} answered {response.status_code}: "
                f"{response.text[:ERROR_BODY_CHARS].strip()}"
            )
        try:
            return parse_trace(response.json())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TempoError(
                f"GET {path} answered 200 with a body that is not a trace ({exc}): "
                f"{response.text[:ERROR_BODY_CHARS]}"
            ) from exc

    def wait_for_trace(
        self, trace_id: str, *, spans: int, timeout: float = 30.0, settle: float = 1.0
    ) -> list[Span]:
        """Poll until the trace has at least `spans` spans and no more arrive for `settle` seconds.

        An empty answer means "not there yet", so polling goes on until the deadline.
        Waiting past the expected count catches extra spans; returning what arrived at the
        deadline lets the caller report what is missing.
        """
        deadline = time.monotonic() + timeout
        found: list[Span] = []
        stable_since = None
        while time.monotonic() < deadline:
            current = self.trace(trace_id)
            if len(current) != len(found):
                found, stable_since = current, time.monotonic()
            elif (
                len(found) >= spans
                and stable_since is not None
                and time.monotonic() - stable_since >= settle
            ):
                return found
            time.sleep(0.2)
        return found
