"""Fixtures for the telemetry package's tests: they need the package, nothing else of Tandem's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
    TraceServiceServicer,
    add_TraceServiceServicer_to_server,
)


class OTLPReceiver(TraceServiceServicer):
    """An OTLP/gRPC trace receiver that records every export request, as sent."""

    def __init__(self) -> None:
        self.endpoint = ""
        self._received: list[ExportTraceServiceRequest] = []
        self._lock = threading.Lock()

    # The gRPC service's method, as the generated servicer names it.
    def Export(
        self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse:
        with self._lock:
            self._received.append(request)
        return ExportTraceServiceResponse()

    @property
    def received(self) -> list[ExportTraceServiceRequest]:
        """The requests answered so far: an export that succeeded has been recorded."""
        with self._lock:
            return list(self._received)


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """An OTLP/gRPC receiver on a loopback port the OS picks; `endpoint` is its host:port."""
    receiver = OTLPReceiver()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    add_TraceServiceServicer_to_server(receiver, server)
    receiver.endpoint = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        yield receiver
    finally:
        server.stop(grace=None).wait()
