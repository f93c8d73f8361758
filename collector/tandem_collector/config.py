"""Command-line options, each with a ``TANDEM_COLLECTOR_*`` environment fallback."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "TANDEM_COLLECTOR_"


@dataclass(frozen=True)
class Config:
    """Everything one collector process needs; ports may be 0 (pick a free one)."""

    host: str = "127.0.0.1"
    grpc_port: int = 4317
    query_port: int = 3200
    prometheus_port: int = 8889
    max_traces: int = 10_000
    max_spans_per_trace: int = 10_000
    settle_seconds: float = 1.0
    quiet: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    metric_expiration: float = 300.0
    waterfall_width: int = 40
    # Seconds a trace stays "live" after its last span, as in Tempo's live store
    # (live_store.max_trace_idle, 5 s); then answers leave out span flags, as Tempo's do
    # once the trace is flushed to a block.
    live_seconds: float = 5.0
    # Seconds each OTLP export waits before it is answered: a slow collector, for fault tests.
    response_delay: float = 0.0


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"port out of range: {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1: {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"must be >= 0: {text}")
    return value


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _typed(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """Wrap a parser so argparse prints a readable type name on errors."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = name
    return convert


# (option, dest, parser, help); defaults come from Config so there is one source of truth.
_OPTIONS: list[tuple[str, str, Callable[[str], Any], str]] = [
    ("--host", "host", str, "address every server binds"),
    ("--grpc-port", "grpc_port", _port, "OTLP/gRPC receiver port"),
    ("--query-port", "query_port", _port, "Tempo-shaped query API port"),
    ("--prometheus-port", "prometheus_port", _port, "Prometheus /metrics port"),
    ("--max-traces", "max_traces", _positive_int, "traces kept in memory (oldest evicted)"),
    ("--max-spans-per-trace", "max_spans_per_trace", _positive_int, "spans kept per trace"),
    (
        "--settle-seconds",
        "settle_seconds",
        _non_negative_float,
        "quiet time before a trace's waterfall is printed",
    ),
    ("--tls-cert", "tls_cert", str, "PEM certificate for the gRPC receiver (enables TLS)"),
    ("--tls-key", "tls_key", str, "PEM private key for the gRPC receiver"),
    (
        "--metric-expiration",
        "metric_expiration",
        _non_negative_float,
        "seconds a metric series is served after its last update (0 = forever)",
    ),
    ("--waterfall-width", "waterfall_width", _positive_int, "width of waterfall bars"),
    (
        "--live-seconds",
        "live_seconds",
        _non_negative_float,
        "seconds after its last span that a trace keeps its span flags in answers, as in "
        "Tempo's live store (0 = answer as Tempo does for a trace already flushed to blocks)",
    ),
    (
        "--response-delay",
        "response_delay",
        _non_negative_float,
        "seconds every OTLP/gRPC export waits before it is answered (simulates a slow collector)",
    ),
]


def env_name(dest: str) -> str:
    """Environment variable consulted when an option is not given on the command line."""
    return ENV_PREFIX + dest.upper()


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """Build the parser; environment values become the defaults (CLI still wins)."""
    env = os.environ if environ is None else environ
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="python -m tandem_collector",
        description="Local OTLP receiver with a Tempo-shaped query API, a Prometheus "
        "endpoint and a console waterfall of each trace.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for option, dest, parse, help_text in _OPTIONS:
        default = getattr(defaults, dest)
        name = env_name(dest)
        if name in env:
            try:
                default = parse(env[name])
            except ValueError as exc:
                parser.error(f"{name}={env[name]!r}: {exc}")
        parser.add_argument(
            option,
            dest=dest,
            type=_typed(parse, parse.__name__.lstrip("_")),
            default=default,
            help=f"{help_text} (env {name})",
        )
    quiet_env = env_name("quiet")
    quiet_default = defaults.quiet
    if quiet_env in env:
        try:
            quiet_default = _flag(env[quiet_env])
        except ValueError as exc:
            parser.error(f"{quiet_env}={env[quiet_env]!r}: {exc}")
    parser.add_argument(
        "--quiet",
        action=argparse.BooleanOptionalAction,
        default=quiet_default,
        help=f"do not print trace waterfalls (env {quiet_env})",
    )
    return parser


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Parse ``argv`` (default ``sys.argv[1:]``) into a validated :class:`Config`."""
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key must be given together")
    return Config(**vars(args))
