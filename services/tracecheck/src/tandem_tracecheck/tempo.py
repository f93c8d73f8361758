"""A small client for the parts of Tempo's HTTP API the checks use."""

from __future__ import annotations

import time

import httpx

from tandem_tracecheck.spans import Span, parse_trace


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

    def trace(self, trace_id: str) -> list[Span] | None:
        """The trace's spans, or None while Tempo does not know it."""
        response = self._http.get(f"/api/v2/traces/{trace_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return parse_trace(response.json())

    def wait_for_trace(
        self, trace_id: str, *, spans: int, timeout: float = 30.0, settle: float = 1.0
    ) -> list[Span]:
        """Poll until the trace has at least `spans` spans and no more arrive for `settle` seconds.

        Waiting past the expected count catches extra spans; returning what
        arrived at the deadline lets the caller report what is missing.
        """
        deadline = time.monotonic() + timeout
        found: list[Span] = []
        stable_since = None
        while time.monotonic() < deadline:
            current = self.trace(trace_id) or []
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

    def search(self, tags: str, *, limit: int = 20) -> list[dict]:
        """Tempo's /api/search by logfmt tags; the `traces` list of the answer."""
        response = self._http.get("/api/search", params={"tags": tags, "limit": limit})
        response.raise_for_status()
        return response.json().get("traces", [])
