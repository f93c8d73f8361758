"""OTLP/gRPC receiver (grpc.aio): TraceService and MetricsService Export.

gzip request compression is negotiated and undone by gRPC itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from tandem_collector.ports import host_port
from tandem_collector.receiver import Receiver

# The Collector's default max_recv_msg_size_mib is 4; allow more for big local batches.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-enabled gRPC receiver."""

    cert: Path
    key: Path

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())])


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver, delay: float = 0.0) -> None:
        self._receiver = receiver
        self._delay = delay

    async def Export(self, request, context):
        if self._delay:
            await asyncio.sleep(self._delay)
        return self._receiver.export_traces(request)


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: Receiver, delay: float = 0.0) -> None:
        self._receiver = receiver
        self._delay = delay

    async def Export(self, request, context):
        if self._delay:
            await asyncio.sleep(self._delay)
        return self._receiver.export_metrics(request)


def create_grpc_server(
    receiver: Receiver,
    host: str,
    port: int,
    tls: TlsFiles | None = None,
    response_delay: float = 0.0,
) -> tuple[grpc.aio.Server, int]:
    """Build and bind (not start) the server; returns it with the port really bound.

    Must be called with the event loop that will run the server.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # gRPC sets SO_REUSEPORT by default, which would let a second collector
            # silently share the port instead of failing to start.
            ("grpc.so_reuseport", 0),
        ]
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
        _TraceService(receiver, response_delay), server
    )
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
        _MetricsService(receiver, response_delay), server
    )
    address = host_port(host, port)
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, tls.credentials())
    except RuntimeError as exc:  # grpc raises this when the address is taken
        raise OSError(f"cannot bind OTLP/gRPC receiver to {address}: {exc}") from exc
    if not bound:
        raise OSError(f"cannot bind OTLP/gRPC receiver to {address}")
    return server, bound
