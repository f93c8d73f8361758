"""Tempo 3.0.3's trace-by-id API, ``GET /api/v2/traces/<id>``, over the trace store.

The answers take Tempo's shape (``tempopb.TraceByIDResponse`` written with jsonpb, zero
values left out):

- a trace it holds: 200, ``{"trace":{"resourceSpans":[...]},"metrics":{"inspectedBytes":"N"}}``;
- a trace it does not hold: 200, ``{"trace":{},"metrics":{}}`` (never 404);
- a malformed id: 400, Tempo's message as plain text (Tempo's error bodies are not JSON).

ResourceSpans are OTLP protobuf JSON: camelCase fields, ids in base64, 64-bit integers as
strings, enums by name (``SPAN_KIND_SERVER``). Span ``flags`` appear only while the trace
is live: Tempo drops them when it flushes the trace to a block, a few seconds after its
last span, and so does this API ``live_seconds`` after a trace's last span.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tandem_collector.ids import parse_trace_id
from tandem_collector.store import Trace, TraceStore


class _JSON(Response):
    """Compact JSON, as Tempo writes it."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("utf-8")


def trace_by_id_body(trace: Trace | None, *, live: bool) -> dict[str, Any]:
    """The JSON body Tempo answers for ``trace`` (None: a trace it does not hold)."""
    if trace is None:
        return {"trace": {}, "metrics": {}}
    batches = [json_format.MessageToDict(batch) for batch in trace.batches]
    if not live:
        for batch in batches:
            for scope_spans in batch.get("scopeSpans", ()):
                for span in scope_spans.get("spans", ()):
                    span.pop("flags", None)
    # Tempo counts the bytes it read to find the trace; here, the bytes the trace takes.
    inspected = sum(batch.ByteSize() for batch in trace.batches)
    return {"trace": {"resourceSpans": batches}, "metrics": {"inspectedBytes": str(inspected)}}


def create_tempo_app(store: TraceStore, live_seconds: float) -> Starlette:
    """Starlette app for Tempo's ``/ready`` and ``/api/v2/traces/<id>``."""

    async def trace_v2(request: Request) -> Response:
        raw_id = request.path_params["trace_id"]
        try:
            trace_id = parse_trace_id(raw_id)
        except ValueError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        trace = store.get(trace_id)
        live = trace is not None and store.idle_seconds(trace) < live_seconds
        return _JSON(trace_by_id_body(trace, live=live))

    async def ready(_: Request) -> Response:
        return PlainTextResponse("ready")

    return Starlette(
        routes=[
            Route("/ready", ready, methods=["GET"]),
            Route("/api/v2/traces/{trace_id}", trace_v2, methods=["GET"]),
        ]
    )
