"""OTLP/HTTP receiver: ``POST /v1/traces``, ``/v1/metrics`` and ``/v1/logs``.

Answers as the OTLP spec asks: 200 with an Export*ServiceResponse in the request's
encoding, 400 with a ``google.rpc.Status`` for a body that cannot be decoded, 413 when it
is too large, 415 for an unsupported content type. Bad input never yields a 500.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tandem_collector import otlp_codec
from tandem_collector.receiver import Receiver

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_DECOMPRESSED_BYTES = 128 * 1024 * 1024


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing to buffer more than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise otlp_codec.BadRequestError(f"body exceeds {limit} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise otlp_codec.BadRequestError(f"body exceeds {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _endpoint(
    message_type: type[Message], export: Callable[[Message], Message]
) -> Callable[[Request], object]:
    async def handle(request: Request) -> Response:
        media = otlp_codec.media_type(request.headers.get("content-type"))
        if media not in otlp_codec.SUPPORTED_MEDIA_TYPES:
            # Same wording and plain-text body as the Collector's otlpreceiver.
            return PlainTextResponse(
                f"415 unsupported media type, supported: "
                f"[{otlp_codec.JSON}, {otlp_codec.PROTOBUF}]",
                status_code=415,
            )
        try:
            body = await _read_body(request, MAX_BODY_BYTES)
            body = otlp_codec.decompress(
                body, request.headers.get("content-encoding"), MAX_DECOMPRESSED_BYTES
            )
            message = otlp_codec.parse_request(body, media, message_type)
        except otlp_codec.BadRequestError as exc:
            code = (
                otlp_codec.RESOURCE_EXHAUSTED if exc.status == 413 else otlp_codec.INVALID_ARGUMENT
            )
            return Response(
                otlp_codec.encode_status(code, str(exc), media),
                status_code=exc.status,
                media_type=media,
            )
        except ClientDisconnect:
            return Response(status_code=400)
        return Response(otlp_codec.encode_message(export(message), media), media_type=media)

    return handle


def create_otlp_http_app(receiver: Receiver) -> Starlette:
    """Starlette app for the OTLP/HTTP receiver."""
    return Starlette(
        routes=[
            Route(
                "/v1/traces",
                _endpoint(ExportTraceServiceRequest, receiver.export_traces),
                methods=["POST"],
            ),
            Route(
                "/v1/metrics",
                _endpoint(ExportMetricsServiceRequest, receiver.export_metrics),
                methods=["POST"],
            ),
            Route(
                "/v1/logs",
                _endpoint(ExportLogsServiceRequest, receiver.export_logs),
                methods=["POST"],
            ),
        ]
    )
