"""Every setting is honoured or refused at start: the OTEL_* ones the SDK reads too.

Each service is a fresh process here, because import order matters:
opentelemetry.propagate reads OTEL_PROPAGATORS when it is first imported.
"""

from __future__ import annotations

import httpx
import pytest

from tandem_localstack import Collector, Stack
from tandem_tracecheck import TempoClient
from tandem_tracecheck.scenarios import new_traceparent, traceresponse_context
from tests.support import free_port

pytestmark = pytest.mark.local_stack

REFUSED = [
    # (variable, value, what the one line must say besides the variable and value)
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "gzip or none"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "abc", "whole number"),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2.5", "whole number"),
    ("OTEL_PROPAGATORS", "bogus", "installed: b3, b3multi, baggage, none, tracecontext"),
    ("OTEL_PROPAGATORS", "tracecontext,jaeger", "'jaeger' is not installed"),
    ("OTEL_TRACES_EXPORTER", "zipkin", "otlp, console or none"),
    ("OTEL_METRICS_EXPORTER", "prometheus", "otlp, console or none"),
    ("OTEL_LOGS_EXPORTER", "otlp", "exports no logs over OTLP"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "OTLP/gRPC only"),
    ("OTEL_TRACES_SAMPLER", "bogus", "parentbased_traceidratio"),
    ("OTEL_EXPORTER_OTLP_INSECURE", "maybe", "true or false"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url", "http://host:port"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317", "http://host:port"),
    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem", "no readable file"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "0", "at least 1"),
    ("OTEL_METRICS_EXEMPLAR_FILTER", "sometimes", "trace_based"),
    ("OTEL_RESOURCE_ATTRIBUTES", "team", "key=value"),
    ("OTEL_SDK_DISABLED", "1", "true or false"),
    ("OTEL_PYTHON_ID_GENERATOR", "xray", "auto-instrumentation"),
]


def _start(stack: Stack, name: str, service: str, env: dict[str, str]):
    # Every port free, the gateway's internal one too: only the setting can stop it.
    env = {"HOST": "127.0.0.1", "PORT": str(free_port()), **env}
    if service == "gateway":
        env["INTERNAL_PORT"] = str(free_port())
    return stack.start(name, service, env)


@pytest.mark.parametrize(("variable", "value", "reason"), REFUSED)
def test_an_otel_setting_that_cannot_be_honoured_stops_the_service_in_one_line(
    stack: Stack, variable: str, value: str, reason: str
) -> None:
    name = f"worker-refuses-{variable.lower()}-{len(value)}"
    process = _start(stack, name, "worker", {variable: value})
    assert process.popen.wait(30) == 1
    output = process.output()
    # Refused before anything was served: no traceback, never listening. (The SDK may have
    # warned first: it reads OTEL_RESOURCE_ATTRIBUTES as it is imported.)
    assert "Traceback" not in output and "Running on" not in output, output
    last = output.strip().splitlines()[-1]
    assert variable in last and value in last and reason in last, output


def test_a_sampler_argument_out_of_range_is_refused_not_read_as_a_float_error(stack: Stack) -> None:
    env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "5"}
    process = _start(stack, "gateway-refuses-sampler-arg", "gateway", env)
    assert process.popen.wait(30) == 1
    lines = process.output().strip().splitlines()
    assert lines == ["OTEL_TRACES_SAMPLER_ARG='5': a ratio must be from 0 to 1"], lines


def test_an_unknown_otel_name_is_named_in_one_warning_and_the_service_serves(
    stack: Stack, collector: Collector
) -> None:
    pair = stack.start_pair(
        collector, suffix="-typo", worker_env={"OTEL_EXPORTER_OTLP_ENDPIONT": "x"}
    )
    response = httpx.get(f"{pair.gateway_url}/api/work", params={"tasks": 1}, timeout=30)
    assert response.status_code == 200
    warnings = [
        line for line in pair.worker.output().splitlines() if "OTEL_EXPORTER_OTLP_ENDPIONT" in line
    ]
    assert len(warnings) == 1 and "no OpenTelemetry variable has such a name" in warnings[0]


def test_traces_exporter_none_exports_no_span_and_context_still_flows(
    stack: Stack, collector: Collector
) -> None:
    """The gateway exports nothing; the worker, exporting as usual, continues its trace."""
    pair = stack.start_pair(
        collector, suffix="-noexport", gateway_env={"OTEL_TRACES_EXPORTER": "none"}
    )
    traceparent, trace_id, _ = new_traceparent()
    response = httpx.get(
        f"{pair.gateway_url}/api/work",
        params={"tasks": 1},
        headers={"traceparent": traceparent},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json()["trace_id"] == trace_id
    # Stopped, both have flushed everything they would ever export.
    assert pair.gateway.stop() == 0
    assert pair.worker.stop() == 0
    with TempoClient(collector.tempo_url) as tempo:
        spans = tempo.wait_for_trace(trace_id, spans=4, timeout=20)
    assert {span.service for span in spans} == {"worker"}
    assert sorted(span.name for span in spans) == [
        "GET",
        "POST /tasks",
        "compute",
        "publish result",
    ]


def test_always_off_sampler_is_honoured(stack: Stack, collector: Collector) -> None:
    """A new trace is not sampled (traceresponse's sampled flag clear), and nothing is stored."""
    env = {"OTEL_TRACES_SAMPLER": "always_off"}
    pair = stack.start_pair(collector, suffix="-off", gateway_env=env, worker_env=env)
    response = httpx.get(f"{pair.gateway_url}/api/work", params={"tasks": 1}, timeout=30)
    assert response.status_code == 200
    trace_id = response.json()["trace_id"]
    assert traceresponse_context(response) == (trace_id, False)
    assert pair.gateway.stop() == 0
    assert pair.worker.stop() == 0
    with TempoClient(collector.tempo_url) as tempo:
        assert tempo.trace(trace_id) == []


FAILING_SERVICE = '''
import os
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from tandem_service import Listener, serve
from tandem_telemetry import instrument


@asynccontextmanager
async def unreachable_database(app):
    raise RuntimeError("the database is unreachable")
    yield


class BrokenMiddleware:
    """Raises as Starlette builds its middleware stack: before the app's lifespan runs."""

    def __init__(self, app):
        raise RuntimeError("the middleware cannot start")


if os.environ["FAILURE"] == "lifespan":
    app = Starlette(lifespan=unreachable_database)
else:
    app = Starlette()
    app.add_middleware(BrokenMiddleware)
app = instrument(app, "failing")

if __name__ == "__main__":
    raise SystemExit(serve({Listener.public(8099): "failing_service:app"}))
'''


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ("lifespan", "RuntimeError: the database is unreachable"),
        ("middleware", "RuntimeError: the middleware cannot start"),
    ],
)
def test_an_app_that_cannot_start_stops_the_process_instead_of_serving_without_lifespan(
    stack: Stack, tmp_path, failure: str, reason: str
) -> None:
    (tmp_path / "failing_service.py").write_text(FAILING_SERVICE)
    # No collector here: nothing to export, so the process's last line is its own.
    env = {
        "FAILURE": failure,
        "PYTHONPATH": str(tmp_path),
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
    }
    process = _start(stack, f"failing-{failure}", "failing_service", env)
    assert process.popen.wait(30) == 1
    output = process.output()
    assert "continuing without Lifespan support" not in output, output
    assert "Running on" not in output, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("cannot start:") and reason in last, output
