"""TANDEM_FAST_PATH: which path runs, on which SDK; the public path touches no SDK internals.

These run on every SDK release Tandem supports (the fast path's own
differential tests are marked fast_path).
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import Tracer

import tandem_telemetry
from tandem_telemetry.bootstrap import FastPathUnavailable, build_telemetry, load_fast_path
from tandem_telemetry.settings import TelemetrySettings

PACKAGE = Path(tandem_telemetry.__file__).parent


@pytest.fixture
def an_untested_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every OpenTelemetry package reports a release the fast path was never tested on."""
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "1.999.0" if name.startswith("opentelemetry") else real(name),
    )


def test_auto_takes_the_public_path_on_an_untested_sdk_and_says_so_once(
    an_untested_sdk: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tandem_telemetry"):
        telemetry = build_telemetry(
            "svc",
            settings=TelemetrySettings(fast_path="auto"),
            metric_reader=InMemoryMetricReader(),
        )
    try:
        assert not telemetry.fast_path
        assert type(telemetry.tracer) is Tracer
        lines = [r.getMessage() for r in caplog.records if r.name == "tandem_telemetry"]
        assert (
            len(lines) == 1 and "public OpenTelemetry API" in lines[0] and "1.999.0" in lines[0]
        ), lines
    finally:
        telemetry.shutdown(1)


def test_on_refuses_to_start_on_an_untested_sdk(
    an_untested_sdk: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(
        FastPathUnavailable, match=r"TANDEM_FAST_PATH=on.*1\.999\.0.*TANDEM_FAST_PATH=auto"
    ):
        load_fast_path("on")
    # A service refuses at import, before it serves anything.
    monkeypatch.setenv("TANDEM_FAST_PATH", "on")
    from starlette.applications import Starlette

    with pytest.raises(FastPathUnavailable):
        tandem_telemetry.instrument(Starlette(), "svc")


def test_a_fast_path_that_cannot_load_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever an SDK release moves or renames, auto never fails: it takes the public path."""
    monkeypatch.setitem(
        sys.modules, "tandem_telemetry.fastpath", None
    )  # importing it raises ImportError
    with caplog.at_level(logging.INFO, logger="tandem_telemetry"):
        assert load_fast_path("auto") is None
    assert "cannot load" in caplog.text
    with pytest.raises(FastPathUnavailable, match="cannot load"):
        load_fast_path("on")


def test_off_uses_the_sdks_own_tracer_and_histograms() -> None:
    telemetry = build_telemetry(
        "svc", settings=TelemetrySettings(fast_path="off"), metric_reader=InMemoryMetricReader()
    )
    try:
        assert not telemetry.fast_path
        assert type(telemetry.tracer) is Tracer
        assert type(telemetry.server_duration).__module__.startswith("opentelemetry.sdk")
    finally:
        telemetry.shutdown(1)


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_FAST_PATH", "fast")
    with pytest.raises(ValueError, match="TANDEM_FAST_PATH='fast': use one of auto, on, off"):
        TelemetrySettings.from_env()


@pytest.mark.fast_path
def test_auto_takes_the_fast_path_on_a_tested_sdk() -> None:
    from tandem_telemetry import fastpath

    assert fastpath.unsupported_reason() is None, (
        "this environment's SDK is not in fastpath.TESTED_RELEASES"
    )
    telemetry = build_telemetry(
        "svc",
        settings=TelemetrySettings(fast_path="auto"),
        metric_reader=InMemoryMetricReader(),
    )
    try:
        assert telemetry.fast_path and isinstance(telemetry.tracer, fastpath.RequestTracer)
    finally:
        telemetry.shutdown(1)


def test_the_default_path_reads_no_private_sdk_member() -> None:
    """Outside fastpath.py the package imports no `_internal` module, silences no private-access
    lint."""
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "fastpath.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if (
                "SLF001" in line
                or re.search(r"\b_internal\b", line)
                or re.search(r"from opentelemetry\S* import .*\b_[a-z]", line)
            ):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


def test_serving_a_request_on_the_public_path_never_loads_the_fast_path() -> None:
    """TANDEM_FAST_PATH=off: a traced request and a traced client call; the fast-path module is
    never imported."""
    script = """
import asyncio, sys
import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
import tandem_telemetry
from tandem_telemetry.settings import TelemetrySettings
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
spans = InMemorySpanExporter()
tandem_telemetry.setup(
    "svc",
    settings=TelemetrySettings.from_env(),
    span_processor=SimpleSpanProcessor(spans),
    metric_reader=InMemoryMetricReader(),
)
async def ok(request):
    return PlainTextResponse("ok")
app = tandem_telemetry.instrument(Starlette(routes=[Route("/", ok)]), "svc")
async def main():
    transport = httpx.ASGITransport(app=app)
    async with tandem_telemetry.create_client("http://svc", transport=transport) as client:
        assert (await client.get("/")).status_code == 200
asyncio.run(main())
finished = spans.get_finished_spans()
assert sorted(s.kind.name for s in finished) == ["CLIENT", "SERVER"], finished
assert "tandem_telemetry.fastpath" not in sys.modules
print("public path only")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        env={**_env(), "TANDEM_FAST_PATH": "off"},
    )
    assert proc.returncode == 0 and "public path only" in proc.stdout, proc.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TANDEM_"))}
