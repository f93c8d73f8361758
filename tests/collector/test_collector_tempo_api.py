"""The Tempo-shaped query API: trace by id (v1, v2), search, errors."""

from __future__ import annotations

import base64

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from tandem_collector.search import ROOT_SPAN_NOT_YET_RECEIVED
from tests.collector.helpers import (
    BASE_NS,
    CLIENT,
    MS,
    make_span,
    request,
    resource_spans,
    span_id,
)

# Trace ids chosen so one of them has leading zeros (Tempo strips them in search results).
TRACE_A = bytes.fromhex("00000a1b2c3d4e5f60718293a4b5c6d7")
TRACE_B = bytes.fromhex("b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0")
TRACE_C = bytes.fromhex("c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0")


@pytest.fixture
def loaded(collector):
    """A: gateway -> worker, 20 ms.  B: gateway health check 1 s later, 1 ms.
    C: a worker span whose parent never arrived, 2 s later, 5 ms, error."""
    gateway = resource_spans(
        "gateway",
        [
            make_span(
                TRACE_A,
                span_id(1),
                "GET /api/work",
                duration_ms=20,
                attrs={"http.route": "/api/work", "http.response.status_code": 200},
            ),
            make_span(
                TRACE_A,
                span_id(2),
                "POST",
                parent=span_id(1),
                start_ms=2,
                duration_ms=15,
                kind=CLIENT,
            ),
            make_span(
                TRACE_B,
                span_id(3),
                "GET /health",
                start_ms=1000,
                duration_ms=1,
                attrs={"http.route": "/health", "http.response.status_code": 200},
            ),
        ],
        service_namespace="tandem",
    )
    worker = resource_spans(
        "worker",
        [
            make_span(
                TRACE_A,
                span_id(4),
                "POST /work",
                parent=span_id(2),
                start_ms=4,
                duration_ms=10,
                attrs={"http.route": "/work"},
            ),
            make_span(
                TRACE_C,
                span_id(5),
                "POST /work",
                parent=span_id(99),
                start_ms=2000,
                duration_ms=5,
                attrs={"http.route": "/work"},
                error=True,
            ),
        ],
    )
    body = request(gateway, worker).SerializeToString()
    response = httpx.post(
        f"{collector.addresses.http_url}/v1/traces",
        content=body,
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 200
    return collector


def get(collector, path: str, **params) -> httpx.Response:
    return httpx.get(f"{collector.addresses.query_url}{path}", params=params)


def search_ids(collector, **params) -> list[str]:
    response = get(collector, "/api/search", **params)
    assert response.status_code == 200, response.text
    return [t["traceID"] for t in response.json()["traces"]]


A, B, C = (t.hex().lstrip("0") for t in (TRACE_A, TRACE_B, TRACE_C))


def test_ready_and_echo(collector):
    assert (get(collector, "/ready").status_code, get(collector, "/ready").text) == (200, "ready")
    assert get(collector, "/api/echo").text == "echo"


def test_trace_by_id_v1_shape(loaded):
    response = get(loaded, f"/api/traces/{TRACE_A.hex()}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["batches"]
    services = [
        next(
            a["value"]["stringValue"]
            for a in b["resource"]["attributes"]
            if a["key"] == "service.name"
        )
        for b in body["batches"]
    ]
    assert services == ["gateway", "worker"]
    spans = [s for b in body["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]
    assert [s["name"] for s in spans] == ["GET /api/work", "POST", "POST /work"]
    root, client, server = spans
    assert root["traceId"] == base64.b64encode(TRACE_A).decode()
    assert root["spanId"] == base64.b64encode(span_id(1)).decode()
    assert "parentSpanId" not in root
    assert server["parentSpanId"] == base64.b64encode(span_id(2)).decode()
    assert (root["kind"], client["kind"]) == ("SPAN_KIND_SERVER", "SPAN_KIND_CLIENT")
    assert root["startTimeUnixNano"] == str(BASE_NS)
    assert root["endTimeUnixNano"] == str(BASE_NS + 20 * MS)
    assert root["status"] == {}
    assert {"key": "http.response.status_code", "value": {"intValue": "200"}} in root["attributes"]
    assert body["batches"][0]["scopeSpans"][0]["scope"] == {"name": "tandem.tests"}


def test_trace_by_id_v2_shape_and_short_ids(loaded):
    v1 = get(loaded, f"/api/traces/{TRACE_A.hex()}").json()
    # Tempo accepts ids without their leading zeros (left-padded), in any case.
    v2 = get(loaded, f"/api/v2/traces/{A.upper()}")
    assert v2.status_code == 200
    assert v2.json() == {"trace": {"resourceSpans": v1["batches"]}}


def test_trace_by_id_protobuf(loaded):
    response = httpx.get(
        f"{loaded.addresses.query_url}/api/traces/{TRACE_A.hex()}",
        headers={"Accept": "application/protobuf"},
    )
    assert response.status_code == 200
    trace = TracesData.FromString(response.content)
    assert sum(len(ss.spans) for rs in trace.resource_spans for ss in rs.scope_spans) == 3


@pytest.mark.parametrize(
    "bad_id, fragment",
    [
        ("not-a-trace", "can only contain hex characters"),
        ("f" * 33, "can't be larger than 128 bits"),
    ],
)
def test_bad_trace_id_is_400_with_message(loaded, bad_id, fragment):
    for version in ("", "/v2"):
        response = get(loaded, f"/api{version}/traces/{bad_id}")
        assert response.status_code == 400
        assert fragment in response.json()["error"]


def test_unknown_trace_is_404(loaded):
    assert get(loaded, "/api/traces/" + "ab" * 16).status_code == 404
    assert get(loaded, "/api/v2/traces/" + "ab" * 16).status_code == 404


def test_search_response_shape(loaded):
    body = get(loaded, "/api/search", tags="service.name=gateway").json()
    assert set(body) == {"traces", "metrics"}
    newest, oldest = body["traces"]
    assert oldest == {
        "traceID": A,  # leading zeros removed, as Tempo's TraceIDToHexString does
        "rootServiceName": "gateway",
        "rootTraceName": "GET /api/work",
        "startTimeUnixNano": str(BASE_NS),
        "durationMs": 20,
    }
    assert newest["traceID"] == B and newest["durationMs"] == 1
    assert body["metrics"]["inspectedTraces"] == 3


def test_search_trace_without_root(loaded):
    found = get(loaded, "/api/search", tags='name="POST /work" status.code=error').json()
    (trace,) = found["traces"]
    assert trace["traceID"] == C
    assert trace["rootServiceName"] == ROOT_SPAN_NOT_YET_RECEIVED
    assert "rootTraceName" not in trace


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"tags": "service.name=gateway"}, [B, A]),
        ({"tags": "service.name=gateway http.route=/api/work"}, [A]),
        ({"tags": 'http.route="/API/WORK"'}, [A]),  # case-insensitive, quoted logfmt
        ({"tags": "service.name=work"}, [C, A]),  # substring match
        ({"tags": "root.service.name=gateway"}, [B, A]),
        ({"q": '{ resource.service.name = "worker" }'}, [C, A]),
        ({"q": '{ name = "GET /health" }'}, [B]),
        ({"q": '{ span.http.route = "/api/work" && resource.service.name = "gateway" }'}, [A]),
        (
            {"q": '{ resource.service.name = "gateway" } && { resource.service.name = "worker" }'},
            [A],
        ),
        ({"q": '{ .http.route = "/work" }'}, [C, A]),
        ({"q": "{ span.http.response.status_code = 200 && kind = server }"}, [B, A]),
        ({"q": "{ status = error }"}, [C]),
        ({"q": "{ duration > 12ms }"}, [A]),
        ({"q": '{ name =~ "GET .*" }'}, [B, A]),
        ({"q": '{ resource.service.namespace != "tandem" }'}, []),
        ({"q": '{ rootServiceName = "gateway" && traceDuration < 5ms }'}, [B]),
        ({"q": "{}"}, [C, B, A]),
        ({"tags": "service.name=gateway", "limit": "1"}, [B]),
        ({"minDuration": "10ms"}, [A]),
        ({"maxDuration": "2ms"}, [B]),
        ({"minDuration": "2ms", "maxDuration": "1s"}, [C, A]),
        ({"start": str(BASE_NS // 10**9 + 1), "end": str(BASE_NS // 10**9 + 1)}, [B]),
        ({"start": str(BASE_NS // 10**9 + 3)}, []),
    ],
)
def test_search_filters(loaded, params, expected):
    assert search_ids(loaded, **params) == expected


def test_search_spansets_for_traceql(loaded):
    body = get(loaded, "/api/search", q='{ span.http.route = "/work" }', spss="1").json()
    trace_a = next(t for t in body["traces"] if t["traceID"] == A)
    (spanset,) = trace_a["spanSets"]
    assert trace_a["spanSet"] == spanset
    assert spanset["matched"] == 1
    (span,) = spanset["spans"]
    assert span == {
        "spanID": span_id(4).hex(),
        "name": "POST /work",
        "startTimeUnixNano": str(BASE_NS + 4 * MS),
        "durationNanos": str(10 * MS),
        "attributes": [{"key": "http.route", "value": {"stringValue": "/work"}}],
    }


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"q": '{ .a = "x" } || { .b = "y" }'}, "'||'"),
        ({"q": '{ .a = "x" } | count() > 1'}, "'|'"),
        ({"q": '{ .a = "x" } >> { .b = "y" }'}, "'>>'"),
        ({"q": "{ .a = }"}, "expected a value"),
        ({"q": '{ foo = "x" }'}, "unknown field 'foo'"),
        ({"q": '{ .a = "x"'}, "unexpected end"),
        ({"q": '{ name =~ "(" }'}, "invalid regular expression"),
        ({"limit": "many"}, "invalid limit"),
        ({"limit": "0"}, "invalid limit"),
        ({"minDuration": "10 parsecs"}, "invalid minDuration"),
        ({"minDuration": "2s", "maxDuration": "1s"}, "invalid maxDuration"),
        ({"start": "10", "end": "5"}, "invalid start/end"),
        ({"tags": "service.name"}, "invalid tags"),
    ],
)
def test_bad_search_is_400_json(loaded, params, fragment):
    response = get(loaded, "/api/search", **params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert fragment in response.json()["error"]


def test_query_api_self_metrics(loaded):
    text = get(loaded, "/metrics").text
    assert "tandem_collector_spans_accepted_total 5\n" in text
    assert "tandem_collector_traces 3\n" in text
