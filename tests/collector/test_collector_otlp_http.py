"""OTLP/HTTP receiver: encodings, compression and error answers."""

from __future__ import annotations

import gzip
import json
import zlib

import httpx
import pytest
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from tandem_collector.testing import running_collector
from tests.collector.helpers import make_span, request, resource_spans, span_id, trace_id

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}

# The span pushed in Tempo's "Push spans with HTTP" guide, and the span Tempo answers with
# on /api/v2/traces/5b8efff798038103d269b633813fc700 in that guide.
TEMPO_GUIDE_REQUEST = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]
            },
            "scopeSpans": [
                {
                    "scope": {"name": "my.library", "version": "1.0.0"},
                    "spans": [
                        {
                            "traceId": "5B8EFFF798038103D269B633813FC700",
                            "spanId": "EEE19B7EC3C1B100",
                            "name": "I am a span!",
                            "startTimeUnixNano": 1689969302000000000,
                            "endTimeUnixNano": 1689970000000000000,
                            "kind": 2,
                            "attributes": [
                                {"key": "my.span.attr", "value": {"stringValue": "some value"}}
                            ],
                        }
                    ],
                }
            ],
        }
    ]
}
TEMPO_GUIDE_RESPONSE_SPAN = {
    "traceId": "W47/95gDgQPSabYzgT/HAA==",
    "spanId": "7uGbfsPBsQA=",
    "name": "I am a span!",
    "kind": "SPAN_KIND_SERVER",
    "startTimeUnixNano": "1689969302000000000",
    "endTimeUnixNano": "1689970000000000000",
    "attributes": [{"key": "my.span.attr", "value": {"stringValue": "some value"}}],
    "status": {},
}


def one_span_request(n: int = 1) -> bytes:
    return request(
        resource_spans(
            "gateway",
            [
                make_span(trace_id(n), span_id(1), "GET /api/work"),
            ],
        )
    ).SerializeToString()


def post(collector, body: bytes, headers: dict[str, str], path: str = "/v1/traces"):
    return httpx.post(f"{collector.addresses.http_url}{path}", content=body, headers=headers)


def stored(collector, n: int) -> bool:
    return collector.call(lambda c: trace_id(n) in c.traces)


def test_protobuf_body(collector):
    response = post(collector, one_span_request(), PROTOBUF)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
    assert stored(collector, 1)


def test_json_body_matches_tempo_guide(collector):
    response = post(collector, json.dumps(TEMPO_GUIDE_REQUEST).encode(), JSON)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    trace = httpx.get(
        f"{collector.addresses.query_url}/api/v2/traces/5b8efff798038103d269b633813fc700"
    ).json()
    (batch,) = trace["trace"]["resourceSpans"]
    assert batch["scopeSpans"][0]["spans"] == [TEMPO_GUIDE_RESPONSE_SPAN]


@pytest.mark.parametrize(
    "encoding, compress",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
    ],
)
def test_compressed_bodies(collector, encoding, compress):
    body = compress(json.dumps(TEMPO_GUIDE_REQUEST).encode())
    response = post(collector, body, {**JSON, "Content-Encoding": encoding})
    assert response.status_code == 200
    proto = compress(one_span_request(2))
    assert post(collector, proto, {**PROTOBUF, "Content-Encoding": encoding}).status_code == 200
    assert stored(collector, 2)


def test_content_type_parameters_are_accepted(collector):
    response = post(
        collector, one_span_request(3), {"Content-Type": "application/x-protobuf; charset=binary"}
    )
    assert response.status_code == 200


def test_partial_success_for_dropped_spans(collector):
    body = request(
        resource_spans(
            "gateway",
            [
                make_span(b"\x01", span_id(1), "bad id"),
                make_span(trace_id(4), span_id(2), "ok"),
            ],
        )
    ).SerializeToString()
    response = post(collector, body, PROTOBUF)
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1
    assert "valid 16-byte trace id" in partial.error_message


def test_bad_protobuf_is_400_with_status(collector):
    response = post(collector, b"\xff\xff\xff\xff", PROTOBUF)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/x-protobuf"
    status = Status.FromString(response.content)
    assert status.code == 3 and "invalid protobuf body" in status.message


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"{not json", "invalid JSON body"),
        (b"[1, 2]", "expected an object"),
        (b'{"resourceSpans": 5}', "invalid OTLP/JSON body"),
        (
            json.dumps(
                {
                    "resourceSpans": [
                        {"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "00"}]}]}
                    ]
                }
            ).encode(),
            "OTLP/JSON ids are hex",
        ),
        (b"\xff\xfe", "invalid JSON body"),
    ],
)
def test_bad_json_is_400_with_status(collector, body, fragment):
    response = post(collector, body, JSON)
    assert response.status_code == 400
    assert response.json()["code"] == 3
    assert fragment in response.json()["message"]


def test_bad_compression_is_400(collector):
    response = post(collector, b"not gzip", {**PROTOBUF, "Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "invalid gzip body" in Status.FromString(response.content).message
    response = post(collector, one_span_request(), {**JSON, "Content-Encoding": "br"})
    assert response.status_code == 400
    assert "unsupported Content-Encoding" in response.json()["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", ""])
def test_wrong_content_type_is_415(collector, content_type):
    response = post(collector, one_span_request(), {"Content-Type": content_type})
    assert response.status_code == 415
    assert "unsupported media type" in response.text


def test_wrong_method_and_path(collector):
    assert httpx.get(f"{collector.addresses.http_url}/v1/traces").status_code == 405
    assert post(collector, one_span_request(), PROTOBUF, "/v1/nothing").status_code == 404


def test_logs_are_accepted_and_counted(collector):
    body = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "body": {"stringValue": "hello"},
                                "traceId": "5B8EFFF798038103D269B633813FC700",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    response = post(collector, json.dumps(body).encode(), JSON, "/v1/logs")
    assert response.status_code == 200
    assert collector.call(lambda c: c.receiver.log_records_received) == 1


@pytest.fixture(scope="module")
def shared_collector():
    with running_collector() as running:
        yield running


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=256),
    media=st.sampled_from(["application/json", "application/x-protobuf"]),
)
def test_arbitrary_bodies_never_cause_500(shared_collector, body, media):
    response = post(shared_collector, body, {"Content-Type": media})
    assert response.status_code in (200, 400)
