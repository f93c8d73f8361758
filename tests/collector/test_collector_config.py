"""CLI options and their environment fallbacks."""

from __future__ import annotations

import dataclasses

import pytest

from tandem_collector.config import Config, build_parser, env_name, parse_config


def test_defaults_are_the_ports_the_real_collector_and_tempo_use():
    config = parse_config([], environ={})
    assert config == Config()
    assert (config.grpc_port, config.query_port, config.prometheus_port) == (4317, 3200, 8889)
    assert config.live_seconds == 5.0  # Tempo's live_store.max_trace_idle


def test_every_setting_is_an_option_with_an_environment_fallback():
    usage = " ".join(build_parser(environ={}).format_help().split())
    for field in dataclasses.fields(Config):
        assert f"--{field.name.replace('_', '-')}" in usage
        assert f"(env {env_name(field.name)})" in usage


def test_environment_fallbacks_and_cli_precedence():
    env = {
        "TANDEM_COLLECTOR_GRPC_PORT": "5317",
        "TANDEM_COLLECTOR_QUIET": "true",
        "TANDEM_COLLECTOR_MAX_TRACES": "50",
        "TANDEM_COLLECTOR_HOST": "::1",
        "TANDEM_COLLECTOR_LIVE_SECONDS": "0",
    }
    config = parse_config(["--max-traces", "7"], environ=env)
    assert (config.grpc_port, config.quiet, config.max_traces, config.host) == (
        5317,
        True,
        7,
        "::1",
    )
    assert config.live_seconds == 0
    assert parse_config(["--no-quiet"], environ=env).quiet is False


@pytest.mark.parametrize(
    "argv, env",
    [
        (["--grpc-port", "70000"], {}),
        (["--max-traces", "0"], {}),
        (["--live-seconds", "-1"], {}),
        (["--tls-cert", "cert.pem"], {}),
        ([], {"TANDEM_COLLECTOR_QUERY_PORT": "http"}),
        ([], {"TANDEM_COLLECTOR_QUIET": "maybe"}),
    ],
)
def test_invalid_values_are_usage_errors(argv, env, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv, environ=env)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err
