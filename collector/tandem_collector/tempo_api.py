"""Tempo-shaped query API over the trace store.

Shapes, as Tempo serves them (``pkg/tempopb/tempo.proto``, marshalled with jsonpb):

- ``GET /api/traces/<id>`` → ``tempopb.Trace``: ``{"batches": [ResourceSpans...]}``
- ``GET /api/v2/traces/<id>`` → ``tempopb.TraceByIDResponse``:
  ``{"trace": {"resourceSpans": [ResourceSpans...]}}``

ResourceSpans are OTLP protobuf JSON: camelCase fields, ids in base64, 64-bit integers as
strings, enums by name (``SPAN_KIND_SERVER``). ``Accept: application/protobuf`` returns
the same messages in protobuf (``tempopb.Trace`` is wire-identical to ``TracesData``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tandem_collector import search as search_module
from tandem_collector.ids import parse_trace_id
from tandem_collector.otlp_codec import varint
from tandem_collector.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from tandem_collector.prometheus import Family
from tandem_collector.store import Trace, TraceStore

PROTOBUF_MEDIA_TYPES = ("application/protobuf", "application/x-protobuf")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _JSON(Response):
    """Compact JSON, as Tempo writes it."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("utf-8")


def _wants_protobuf(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(media in accept for media in PROTOBUF_MEDIA_TYPES)


def _window_excludes(trace: Trace, request: Request) -> bool:
    """True when optional ``start``/``end`` (unix seconds) leave the trace out."""
    try:
        start = int(request.query_params["start"]) if request.query_params.get("start") else None
        end = int(request.query_params["end"]) if request.query_params.get("end") else None
    except ValueError:
        raise ValueError("invalid start/end: must be unix epoch seconds") from None
    if start is not None and trace.end_ns < start * 1_000_000_000:
        return True
    return end is not None and trace.start_ns > end * 1_000_000_000


def create_tempo_app(
    store: TraceStore, self_metrics: Callable[[], Iterable[Family]] = lambda: ()
) -> Starlette:
    """Starlette app for the query API; ``self_metrics()`` feeds ``GET /metrics``."""

    def lookup(request: Request) -> Trace | Response:
        raw_id = request.path_params["trace_id"]
        try:
            trace_id = parse_trace_id(raw_id)
        except ValueError as exc:
            return _error(400, f"invalid trace ID {raw_id!r}: {exc}")
        trace = store.get(trace_id)
        try:
            if trace is None or _window_excludes(trace, request):
                return _error(404, f"trace {trace_id.hex()} not found")
        except ValueError as exc:
            return _error(400, str(exc))
        return trace

    async def trace_v1(request: Request) -> Response:
        found = lookup(request)
        if isinstance(found, Response):
            return found
        if _wants_protobuf(request):
            body = TracesData(resource_spans=found.batches).SerializeToString()
            return Response(body, media_type="application/protobuf")
        return _JSON({"batches": [json_format.MessageToDict(b) for b in found.batches]})

    async def trace_v2(request: Request) -> Response:
        found = lookup(request)
        if isinstance(found, Response):
            return found
        if _wants_protobuf(request):
            trace_bytes = TracesData(resource_spans=found.batches).SerializeToString()
            # TraceByIDResponse{trace = 1}: a length-delimited field 1 around tempopb.Trace.
            body = b"\x0a" + varint(len(trace_bytes)) + trace_bytes
            return Response(body, media_type="application/protobuf")
        batches = [json_format.MessageToDict(b) for b in found.batches]
        return _JSON({"trace": {"resourceSpans": batches}})

    async def search(request: Request) -> Response:
        try:
            search_request = search_module.parse_search_params(request.query_params)
        except search_module.SearchError as exc:
            return _error(400, str(exc))
        return _JSON(search_module.search(store, search_request))

    async def ready(_: Request) -> Response:
        return PlainTextResponse("ready")

    async def echo(_: Request) -> Response:
        return PlainTextResponse("echo")

    async def metrics(_: Request) -> Response:
        families: list[Family] = sorted(self_metrics(), key=lambda f: f.name)
        return Response("".join(f.render() for f in families), media_type=PROMETHEUS_CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/ready", ready, methods=["GET"]),
            Route("/api/echo", echo, methods=["GET"]),
            Route("/api/traces/{trace_id}", trace_v1, methods=["GET"]),
            Route("/api/v2/traces/{trace_id}", trace_v2, methods=["GET"]),
            Route("/api/search", search, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
