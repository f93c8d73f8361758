"""tandem_telemetry.otel_env: each OTEL_* variable honoured as the specification says, or refused"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_ON, ParentBased

from tandem_telemetry import ENV_VARS, InvalidEnvVar
from tandem_telemetry.otel_env import OTHER_READERS, REFUSED, EnvReader, OtelSettings, OtlpOptions


def read(**environ: str) -> OtelSettings:
    return OtelSettings.from_env(environ)


def refused(message: str, **environ: str) -> None:
    with pytest.raises(InvalidEnvVar, match=message):
        read(**environ)


def test_the_defaults_are_the_specifications() -> None:
    settings = read()
    assert settings.traces_exporters == settings.metrics_exporters == ("otlp",)
    assert settings.sampler is DEFAULT_ON
    assert settings.otlp == {
        "traces": OtlpOptions(10.0, False),
        "metrics": OtlpOptions(10.0, False),
    }


def test_every_variable_read_is_in_env_vars_and_nothing_else_is() -> None:
    """One list of truth: the README's table (built from ENV_VARS) names exactly what is read."""
    reader = EnvReader({})
    OtelSettings.read(reader)
    documented = {name for name in ENV_VARS if name.startswith("OTEL_")}
    assert reader.read | OTHER_READERS == documented


def test_timeouts_are_milliseconds_and_the_signal_s_own_wins() -> None:
    settings = read(OTEL_EXPORTER_OTLP_TIMEOUT="2500", OTEL_EXPORTER_OTLP_METRICS_TIMEOUT="400")
    assert settings.otlp["traces"].timeout_seconds == 2.5
    assert settings.otlp["metrics"].timeout_seconds == 0.4


def test_compression_gzip_and_none_are_both_honoured() -> None:
    settings = read(
        OTEL_EXPORTER_OTLP_COMPRESSION="gzip", OTEL_EXPORTER_OTLP_TRACES_COMPRESSION="none"
    )
    assert settings.otlp["traces"].gzip is False
    assert settings.otlp["metrics"].gzip is True


@pytest.mark.parametrize(
    ("value", "chosen"),
    [
        ("none", ()),
        ("console", ("console",)),
        ("otlp, console", ("otlp", "console")),
        ("", ("otlp",)),
    ],
)
def test_exporters_none_console_otlp(value: str, chosen: tuple[str, ...]) -> None:
    settings = read(OTEL_TRACES_EXPORTER=value, OTEL_METRICS_EXPORTER=value)
    assert settings.traces_exporters == settings.metrics_exporters == chosen


def test_samplers() -> None:
    assert read(OTEL_TRACES_SAMPLER="always_off").sampler is ALWAYS_OFF
    ratio = read(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.25")
    assert isinstance(ratio.sampler, ParentBased)
    assert "0.25" in ratio.sampler.get_description()
    # No argument: the specification's default ratio, 1.
    assert "1.0" in read(OTEL_TRACES_SAMPLER="traceidratio").sampler.get_description()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_SAMPLER": "Bogus"}, "OTEL_TRACES_SAMPLER='bogus' is not a sampler"),
        ({"OTEL_TRACES_SAMPLER": "xray"}, "use one of always_on"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "5"},
            "a ratio must be from 0 to 1",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
            "'half' is not a number",
        ),
        ({"OTEL_TRACES_SAMPLER_ARG": "0.5"}, "parentbased_always_on sampler takes none"),
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "'jaeger' is not available"),
        ({"OTEL_METRICS_EXPORTER": "none,otlp"}, "none cannot be combined"),
        ({"OTEL_LOGS_EXPORTER": "console"}, "OTEL_LOGS_EXPORTER='console'"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTLP/gRPC only"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317/v1/traces"}, "no path"),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "grpc://collector:4317"}, "METRICS_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:port"}, "not an OTLP/gRPC endpoint"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4317",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
            },
            "INSECURE=true contradicts",
        ),
        ({"OTEL_EXPORTER_OTLP_INSECURE": "false"}, "http://localhost:4317 \\(the default\\)"),
        ({"OTEL_EXPORTER_OTLP_TRACES_INSECURE": "yes"}, "not a boolean"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "authorization"}, "'authorization' is not key=value"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "a=%zz%ff"}, "is not key=value"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "0"}, "at least 1"),
        (
            {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "600", "OTEL_BSP_MAX_QUEUE_SIZE": "500"},
            "must not exceed",
        ),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "0"}, "at least 1"),
        ({"OTEL_SPAN_LINK_COUNT_LIMIT": "-1"}, "whole number"),
        ({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "sometimes"}, "cumulative"),
        ({"OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel,gcp"}, "'gcp' is not installed"),
        ({"OTEL_PYTHON_CONTEXT": "threadlocal"}, "'threadlocal' is not installed"),
        ({"OTEL_PROPAGATORS": "xray"}, "'xray' is not installed"),
        ({"OTEL_SDK_DISABLED": "yes"}, "OTEL_SDK_DISABLED='yes' is not a boolean"),
    ],
)
def test_what_cannot_be_honoured_is_refused_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    refused(message, **environ)


def test_tls_files_must_be_readable_and_come_with_https(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    https = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4317"}
    read(OTEL_EXPORTER_OTLP_CERTIFICATE=str(pem), **https)
    refused("no readable file", OTEL_EXPORTER_OTLP_CERTIFICATE=str(tmp_path / "none.pem"), **https)
    refused("is plaintext", OTEL_EXPORTER_OTLP_CERTIFICATE=str(pem))
    # A client key alone, or a client pair without a CA: the exporter would read neither.
    refused("go together", OTEL_EXPORTER_OTLP_CLIENT_KEY=str(pem), **https)
    refused(
        "go together",
        OTEL_EXPORTER_OTLP_CLIENT_KEY=str(pem),
        OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE=str(pem),
        **https,
    )
    read(
        OTEL_EXPORTER_OTLP_CERTIFICATE=str(pem),
        OTEL_EXPORTER_OTLP_CLIENT_KEY=str(pem),
        OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE=str(pem),
        **https,
    )


@pytest.mark.parametrize(
    "name",
    [
        "OTEL_PYTHON_TRACER_PROVIDER",
        "OTEL_BLRP_SCHEDULE_DELAY",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        "OTEL_EXPORTER_PROMETHEUS_PORT",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
        "OTEL_SEMCONV_STABILITY_OPT_IN",
        "OTEL_LOG_LEVEL",
    ],
)
def test_a_variable_nothing_here_reads_is_refused_with_the_reason(name: str) -> None:
    reasons = [reason for prefix, reason in REFUSED.items() if name.startswith(prefix)]
    assert reasons
    refused(f"{name}='x' does nothing here: {reasons[0][:20]}", **{name: "x"})
    read(**{name: " "})  # set but blank is unset


def test_an_unknown_name_is_warned_of_once_when_the_pipeline_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = read(OTEL_EXPORTER_OTLP_ENDPIONT="x", OTEL_SERVICE_NAME="kept")
    assert settings.unknown_variables == ("OTEL_EXPORTER_OTLP_ENDPIONT",)
    with caplog.at_level(logging.WARNING, logger="tandem_telemetry"):
        settings.warn_unknown()
    assert [record.getMessage() for record in caplog.records] == [
        "ignoring OTEL_EXPORTER_OTLP_ENDPIONT: "
        "no OpenTelemetry variable has such a name (misspelt?)"
    ]
