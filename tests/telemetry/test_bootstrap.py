"""Setup once per process, the Resource, the disabled SDK, the lifespan flush, bounded shutdown,
JSON logs."""

from __future__ import annotations

import io
import json
import logging
import threading

import httpx
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tandem_telemetry
from tandem_telemetry import (
    JsonFormatter,
    TelemetrySettings,
    TracingMiddleware,
    TracingTransport,
    instrument,
)
from tandem_telemetry.bootstrap import build_resource
from tests.support import Pipeline, refused_port, served


@pytest.fixture(autouse=True)
def _fresh_pipeline():
    tandem_telemetry.shutdown()
    yield
    tandem_telemetry.shutdown()


def test_setup_twice_returns_the_same_pipeline(pipeline: Pipeline) -> None:
    assert tandem_telemetry.setup("another-name") is pipeline.telemetry
    assert tandem_telemetry.current() is pipeline.telemetry


def test_resource_defaults_and_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES",
        "k8s.pod.name=gateway-7d9f,k8s.namespace.name=shop,k8s.node.name=node-1,deployment.environment.name=prod",
    )
    attributes = build_resource("gateway", "1.2.3").attributes
    assert attributes["service.name"] == "gateway"
    assert attributes["service.namespace"] == "tandem"
    assert attributes["service.version"] == "1.2.3"
    assert len(attributes["service.instance.id"]) == 36
    assert attributes["deployment.environment.name"] == "prod"
    assert (
        attributes["k8s.pod.name"],
        attributes["k8s.namespace.name"],
        attributes["k8s.node.name"],
    ) == ("gateway-7d9f", "shop", "node-1")
    assert attributes["telemetry.sdk.language"] == "python"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "renamed")
    assert build_resource("gateway", None).attributes["service.name"] == "renamed"
    assert (
        build_resource("a", None).attributes["service.instance.id"]
        != build_resource("a", None).attributes["service.instance.id"]
    )


def test_malformed_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_UNTRUSTED_CONTEXT", "maybe")
    with pytest.raises(ValueError, match="TANDEM_UNTRUSTED_CONTEXT"):
        TelemetrySettings.from_env()
    monkeypatch.setenv("TANDEM_UNTRUSTED_CONTEXT", "true")
    monkeypatch.setenv("TANDEM_SHUTDOWN_TIMEOUT", "-1")
    with pytest.raises(ValueError, match="TANDEM_SHUTDOWN_TIMEOUT"):
        TelemetrySettings.from_env()


CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.anyio
async def test_disabled_sdk_makes_no_spans_but_the_callers_context_flows_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As with OpenTelemetry's own disabled SDK: no span is recorded, yet the caller's
    traceparent and baggage reach the next service, and traceresponse names the trace."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    exporter = InMemorySpanExporter()
    telemetry = tandem_telemetry.setup("svc", span_exporter=exporter)
    assert not telemetry.enabled
    sent: list[httpx.Headers] = []

    def downstream(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers)
        return httpx.Response(204)

    async def call_downstream(request: Request) -> PlainTextResponse:
        transport = TracingTransport(httpx.MockTransport(downstream), telemetry=telemetry)
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get("http://downstream/next")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", call_downstream), Route("/plain", ok)])
    app.add_middleware(TracingMiddleware, telemetry=telemetry)
    async with served(app) as base, httpx.AsyncClient() as client:
        response = await client.get(
            f"{base}/", headers={"traceparent": CALLER, "baggage": "tenant=acme"}
        )
        no_caller = await client.get(f"{base}/plain")
    assert response.status_code == 200
    assert response.headers["traceresponse"] == CALLER
    assert [(headers["traceparent"], headers["baggage"]) for headers in sent] == [
        (CALLER, "tenant=acme")
    ]
    # No caller context: nothing to continue, so nothing is named.
    assert no_caller.status_code == 200
    assert "traceresponse" not in no_caller.headers
    assert exporter.get_finished_spans() == ()


def flushed_only_on_shutdown(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """Set up the pipeline with the real BatchSpanProcessor, its delay far longer than the test,
    so that only the shutdown flush can deliver; the spans land in the exporter returned."""
    exporter = InMemorySpanExporter()
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    # In memory: an OTLP metric exporter would wait out the shutdown bound on an absent collector.
    tandem_telemetry.setup(
        "svc",
        span_exporter=exporter,
        settings=TelemetrySettings(),
        metric_reader=InMemoryMetricReader(),
    )
    return exporter


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@pytest.mark.anyio
async def test_lifespan_shutdown_flushes_batched_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = flushed_only_on_shutdown(monkeypatch)
    app = instrument(Starlette(routes=[Route("/work", ok)]), "svc")
    async with served(app) as base, httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/work")).status_code == 200
        assert exporter.get_finished_spans() == ()
    assert [span.name for span in exporter.get_finished_spans()] == ["GET /work"]
    assert tandem_telemetry.current() is None


@pytest.mark.anyio
async def test_two_apps_in_one_process_flush_once_after_the_last_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One process, two listeners (the gateway's public and internal apps), one pipeline:
    the first app to stop must not shut the pipeline down under the other."""
    exporter = flushed_only_on_shutdown(monkeypatch)
    public = instrument(Starlette(routes=[Route("/public", ok)]), "svc")
    internal = instrument(
        Starlette(routes=[Route("/internal", ok)]), "svc", trust_incoming_context=True
    )
    async with served(public) as public_url, httpx.AsyncClient() as client:
        async with served(internal) as internal_url:
            assert (await client.get(f"{internal_url}/internal")).status_code == 200
        # The internal app stopped; the pipeline still serves the public one.
        assert tandem_telemetry.current() is not None
        assert (await client.get(f"{public_url}/public")).status_code == 200
        assert exporter.get_finished_spans() == ()
    assert sorted(span.name for span in exporter.get_finished_spans()) == [
        "GET /internal",
        "GET /public",
    ]
    assert tandem_telemetry.current() is None


def test_shutdown_with_unreachable_collector_returns_within_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with refused_port() as port:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30000")
        telemetry = tandem_telemetry.setup("svc", settings=TelemetrySettings(shutdown_timeout=1.0))
        for _ in range(10):
            telemetry.tracer.start_span("lost").end()
        result: list[bool] = []
        worker = threading.Thread(
            target=lambda: result.append(tandem_telemetry.shutdown()), daemon=True
        )
        worker.start()
        # The exporter alone would retry for 30 s; the bound is 1 s; the join leaves generous slack.
        worker.join(10)
        assert not worker.is_alive(), "shutdown held the process past its bound"
        assert result == [False]


def test_json_logs_carry_the_current_trace_ids(pipeline: Pipeline) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc"))
    log = logging.getLogger("tandem-test-logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with pipeline.telemetry.tracer.start_as_current_span("work") as span:
            log.info("inside %s", "span", extra={"task": 7})
        log.info("outside")
    finally:
        log.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert inside["message"] == "inside span"
    assert inside["task"] == 7
    assert inside["service"] == "svc"
    assert inside["level"] == "INFO"
    assert "trace_id" not in outside
