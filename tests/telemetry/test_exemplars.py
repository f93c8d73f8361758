"""http.server.request.duration's exemplars follow OTEL_METRICS_EXEMPLAR_FILTER, on the public
path and on the fast path: trace_based (the default) keeps sampled requests' trace ids,
always_on every request's, always_off none."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tandem_telemetry
from tandem_telemetry import TracingMiddleware
from tests.support import Pipeline, make_pipeline, served

pytestmark = pytest.mark.anyio

SAMPLED_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED_TRACE = "5cf92f3577b34da6a3ce929d0e0e4737"
PARENT_SPAN = "00f067aa0ba902b7"


async def ok(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


def exemplar_trace_ids(pipeline: Pipeline) -> list[str]:
    """The trace ids of the exemplars of this collection (the SDK keeps each collection's
    own, so one request per collection is seen alone)."""
    data = pipeline.metrics.get_metrics_data()
    return [
        format(exemplar.trace_id, "032x")
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "http.server.request.duration"
        for point in metric.data.data_points
        for exemplar in point.exemplars
    ]


# The fast path takes over from the second request of an attribute set: the first prepares it.
PATHS = [
    pytest.param("off", id="public path"),
    pytest.param("auto", id="fast path", marks=pytest.mark.fast_path),
]


@pytest.mark.parametrize("fast_path", PATHS)
@pytest.mark.parametrize(
    ("exemplar_filter", "kept"),
    [
        ("trace_based", {"new", "sampled"}),
        ("always_on", {"new", "sampled", "unsampled"}),
        ("always_off", set()),
    ],
)
async def test_exemplars_follow_the_filter(
    monkeypatch: pytest.MonkeyPatch, fast_path: str, exemplar_filter: str, kept: set[str]
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", exemplar_filter)
    pipeline = make_pipeline(fast_path=fast_path)
    try:
        if fast_path == "auto":
            assert type(pipeline.telemetry.server_duration).__name__ == "DurationHistogram"
        app = Starlette(
            routes=[Route("/ok", ok)],
            middleware=[Middleware(TracingMiddleware, telemetry=pipeline.telemetry)],
        )
        requests = {
            "new": {},
            "sampled": {"traceparent": f"00-{SAMPLED_TRACE}-{PARENT_SPAN}-01"},
            "unsampled": {"traceparent": f"00-{UNSAMPLED_TRACE}-{PARENT_SPAN}-00"},
        }
        seen: dict[str, list[str]] = {}
        async with served(app) as base, httpx.AsyncClient() as client:
            for name, headers in requests.items():
                response = await client.get(f"{base}/ok", headers=headers)
                assert response.status_code == 200
                trace_id = response.headers["traceresponse"].split("-")[1]
                seen[name] = [t for t in exemplar_trace_ids(pipeline) if t == trace_id]
        assert {name for name, ids in seen.items() if ids} == kept, seen
    finally:
        tandem_telemetry.shutdown()
