"""CLI options and their environment fallbacks."""

from __future__ import annotations

import pytest

from tandem_collector.config import Config, parse_config


def test_defaults():
    assert parse_config([], environ={}) == Config()
    assert (
        Config().grpc_port,
        Config().http_port,
        Config().query_port,
        Config().prometheus_port,
    ) == (4317, 4318, 3200, 8889)


def test_environment_fallbacks_and_cli_precedence():
    env = {
        "TANDEM_COLLECTOR_GRPC_PORT": "5317",
        "TANDEM_COLLECTOR_QUIET": "true",
        "TANDEM_COLLECTOR_MAX_TRACES": "50",
        "TANDEM_COLLECTOR_HOST": "::1",
    }
    config = parse_config(["--max-traces", "7"], environ=env)
    assert (config.grpc_port, config.quiet, config.max_traces, config.host) == (
        5317,
        True,
        7,
        "::1",
    )
    assert parse_config(["--no-quiet"], environ=env).quiet is False


@pytest.mark.parametrize(
    "argv, env",
    [
        (["--grpc-port", "70000"], {}),
        (["--max-traces", "0"], {}),
        (["--settle-seconds", "-1"], {}),
        (["--tls-cert", "cert.pem"], {}),
        ([], {"TANDEM_COLLECTOR_HTTP_PORT": "http"}),
        ([], {"TANDEM_COLLECTOR_QUIET": "maybe"}),
    ],
)
def test_invalid_values_are_usage_errors(argv, env, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv, environ=env)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err
