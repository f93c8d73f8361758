"""Tempo 3.0.3's trace-by-id API, answer for answer: found, unknown, malformed, live, flushed."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest

from tandem_collector.store import TraceStore
from tandem_collector.tempo_api import create_tempo_app
from tandem_collector.testing import running_collector
from tests.collector.helpers import (
    BASE_NS,
    CLIENT,
    MS,
    export,
    make_span,
    resource_spans,
    span_id,
)

# Leading zeros on purpose: Tempo accepts the id without them.
TRACE = bytes.fromhex("00000a1b2c3d4e5f60718293a4b5c6d7")
# OTLP span flags: the parent's remoteness is known (0x100), and it is remote (0x200).
REMOTE_PARENT_FLAGS = 0x300


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def two_services() -> tuple:
    """gateway SERVER -> gateway CLIENT -> worker SERVER (remote parent, flags set)."""
    gateway = resource_spans(
        "gateway",
        [
            make_span(
                TRACE,
                span_id(1),
                "GET /api/work",
                duration_ms=20,
                attrs={"http.route": "/api/work", "http.response.status_code": 200},
            ),
            make_span(
                TRACE,
                span_id(2),
                "POST",
                parent=span_id(1),
                start_ms=2,
                duration_ms=15,
                kind=CLIENT,
            ),
        ],
    )
    worker = resource_spans(
        "worker",
        [
            make_span(
                TRACE,
                span_id(3),
                "POST /tasks",
                parent=span_id(2),
                start_ms=4,
                duration_ms=10,
                error=True,
                flags=REMOTE_PARENT_FLAGS,
            )
        ],
    )
    return gateway, worker


def expected_resource_spans(*, flags: bool) -> list[dict]:
    """The trace's `resourceSpans` exactly as Tempo writes them (jsonpb, zero values left out)."""
    scope = {"name": "tandem.tests"}
    worker_span = {
        "traceId": b64(TRACE),
        "spanId": b64(span_id(3)),
        "parentSpanId": b64(span_id(2)),
        "name": "POST /tasks",
        "kind": "SPAN_KIND_SERVER",
        "startTimeUnixNano": str(BASE_NS + 4 * MS),
        "endTimeUnixNano": str(BASE_NS + 14 * MS),
        "status": {"code": "STATUS_CODE_ERROR"},
    }
    if flags:
        worker_span["flags"] = REMOTE_PARENT_FLAGS
    return [
        {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "gateway"}}]
            },
            "scopeSpans": [
                {
                    "scope": scope,
                    "spans": [
                        {
                            "traceId": b64(TRACE),
                            "spanId": b64(span_id(1)),
                            "name": "GET /api/work",
                            "kind": "SPAN_KIND_SERVER",
                            "startTimeUnixNano": str(BASE_NS),
                            "endTimeUnixNano": str(BASE_NS + 20 * MS),
                            "attributes": [
                                {"key": "http.route", "value": {"stringValue": "/api/work"}},
                                {"key": "http.response.status_code", "value": {"intValue": "200"}},
                            ],
                            "status": {},
                        },
                        {
                            "traceId": b64(TRACE),
                            "spanId": b64(span_id(2)),
                            "parentSpanId": b64(span_id(1)),
                            "name": "POST",
                            "kind": "SPAN_KIND_CLIENT",
                            "startTimeUnixNano": str(BASE_NS + 2 * MS),
                            "endTimeUnixNano": str(BASE_NS + 17 * MS),
                            "status": {},
                        },
                    ],
                }
            ],
        },
        {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "worker"}}]
            },
            "scopeSpans": [{"scope": scope, "spans": [worker_span]}],
        },
    ]


def asgi_get(app: Any, path: str) -> httpx.Response:
    """GET from the app itself, without a server."""

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tempo") as client:
            return await client.get(path)

    return asyncio.run(get())


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_trace_received_over_grpc_is_answered_in_tempos_shape():
    """Through the real receiver and server: the body, its type, and ids as Tempo parses them."""
    with running_collector(live_seconds=3600) as collector:
        export(collector.addresses.grpc_endpoint, *two_services())
        url = f"{collector.addresses.query_url}/api/v2/traces"
        response = httpx.get(f"{url}/{TRACE.hex()}")
        short_id = httpx.get(f"{url}/{TRACE.hex().lstrip('0').upper()}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert b", " not in response.content and b": " not in response.content  # compact, as Tempo's
    body = response.json()
    assert list(body) == ["trace", "metrics"]
    assert body["trace"] == {"resourceSpans": expected_resource_spans(flags=True)}
    assert list(body["metrics"]) == ["inspectedBytes"]
    assert int(body["metrics"]["inspectedBytes"]) > 0  # a uint64: a string in jsonpb
    # Tempo left-pads a short id with zeros and reads hex in either case.
    assert short_id.json()["trace"] == body["trace"]


def test_an_unknown_trace_is_200_with_an_empty_trace(collector):
    """Tempo 3.0.3 has no 404 here: an unknown id answers an empty trace and empty metrics."""
    response = httpx.get(f"{collector.addresses.query_url}/api/v2/traces/{'ab' * 16}")
    assert (response.status_code, response.text) == (200, '{"trace":{},"metrics":{}}')


@pytest.mark.parametrize(
    "bad_id, message",
    [
        (
            "not-a-trace",
            "trace IDs can only contain hex characters: invalid character 'n' at position 1",
        ),
        ("f" * 33, "trace IDs can't be larger than 128 bits"),
    ],
)
def test_a_malformed_id_is_400_with_tempos_plain_text_message(collector, bad_id, message):
    response = httpx.get(f"{collector.addresses.query_url}/api/v2/traces/{bad_id}")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == message


def test_span_flags_are_answered_while_live_and_dropped_once_flushed():
    """Tempo keeps span flags only in its live store; `live_seconds` after the last span, a
    trace answers as a flushed one: the same spans, no `flags`."""
    clock = FakeClock()
    store = TraceStore(clock=clock)
    store.add(two_services())
    app = create_tempo_app(store, live_seconds=5.0)
    path = f"/api/v2/traces/{TRACE.hex()}"

    def answered() -> list[dict]:
        return asgi_get(app, path).json()["trace"]["resourceSpans"]

    clock.now += 4.9
    assert answered() == expected_resource_spans(flags=True)
    clock.now += 0.1
    assert answered() == expected_resource_spans(flags=False)
    store.add([resource_spans("worker", [make_span(TRACE, span_id(4), "late", parent=span_id(3))])])
    assert answered()[1]["scopeSpans"][0]["spans"][0]["flags"] == REMOTE_PARENT_FLAGS


def test_live_seconds_zero_answers_every_trace_as_flushed():
    store = TraceStore()
    store.add(two_services())
    response = asgi_get(create_tempo_app(store, live_seconds=0), f"/api/v2/traces/{TRACE.hex()}")
    assert response.json()["trace"]["resourceSpans"] == expected_resource_spans(flags=False)


def test_ready(collector):
    response = httpx.get(f"{collector.addresses.query_url}/ready")
    assert (response.status_code, response.text) == (200, "ready")
