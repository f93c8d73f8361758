"""The OTEL_* variables: every one is honoured as the specification defines it, or refused at start.

The SDK and its exporters read most of these themselves, each in its own way and
at its own time: a malformed compression or timeout raises when the first
exporter is built (in a server, after it listens), an unknown sampler falls back
to sampling everything with a warning, `OTEL_TRACES_EXPORTER` is read only by
the auto-instrumentation agent. So `OtelSettings.from_env` reads them all once,
before anything is built: a value the pipeline cannot honour raises
InvalidEnvVar naming the variable, and so does a variable of OpenTelemetry's
that Tandem has no use for (`REFUSED`). An OTEL_* name nobody defines, such as
a misspelling, is named in one warning when the pipeline is built.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from urllib.parse import unquote, urlsplit

from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)

from tandem_telemetry.env import InvalidEnvVar

logger = logging.getLogger("tandem_telemetry")

SIGNALS = ("traces", "metrics")
EXPORTERS = ("otlp", "console", "none")  # for OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER
W3C_PROPAGATORS = ("tracecontext", "baggage")
DEFAULT_TIMEOUT_MILLIS = 10_000

_BUILTIN_SAMPLERS: Mapping[str, Sampler] = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_on": DEFAULT_ON,
    "parentbased_always_off": DEFAULT_OFF,
}
_RATIO_SAMPLERS = {
    "traceidratio": TraceIdRatioBased,
    "parentbased_traceidratio": ParentBasedTraceIdRatio,
}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Variables of OpenTelemetry's that nothing in Tandem reads, by name or prefix, with the reason.
_AGENT = "read by the auto-instrumentation agent (opentelemetry-instrument), which Tandem is not"
_NO_LOGS = "Tandem exports no logs over OTLP: its logs are JSON lines on stderr, with trace ids"
REFUSED: Mapping[str, str] = {
    "OTEL_PYTHON_TRACER_PROVIDER": "Tandem installs the SDK's TracerProvider itself",
    "OTEL_PYTHON_METER_PROVIDER": "Tandem installs the SDK's MeterProvider itself",
    "OTEL_PYTHON_LOGGER_PROVIDER": _NO_LOGS,
    "OTEL_PYTHON_ID_GENERATOR": _AGENT,
    "OTEL_PYTHON_CONFIGURATOR": _AGENT,
    "OTEL_PYTHON_TRACER_CONFIGURATOR": _AGENT,
    "OTEL_PYTHON_METER_CONFIGURATOR": _AGENT,
    "OTEL_PYTHON_LOGGER_CONFIGURATOR": _AGENT,
    "OTEL_PYTHON_DISTRO": _AGENT,
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": _AGENT,
    "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": _AGENT,
    "OTEL_PYTHON_AUTO_INSTRUMENTATION_": _AGENT,
    "OTEL_PYTHON_EXPORTER_OTLP_": (
        "Tandem's exporters take their TLS settings from OTEL_EXPORTER_OTLP_CERTIFICATE, "
        "_CLIENT_KEY and _CLIENT_CERTIFICATE"
    ),
    "OTEL_INSTRUMENTATION_": (
        "read by the contrib instrumentations; Tandem's middleware and client record no headers"
    ),
    "OTEL_SEMCONV_STABILITY_OPT_IN": (
        "read by the contrib instrumentations; Tandem always follows the stable HTTP conventions"
    ),
    "OTEL_EXPORTER_OTLP_LOGS_": _NO_LOGS,
    "OTEL_BLRP_": _NO_LOGS,
    "OTEL_LOGRECORD_": _NO_LOGS,
    "OTEL_EXPORTER_ZIPKIN_": "Tandem exports over OTLP only",
    "OTEL_EXPORTER_JAEGER_": "Tandem exports over OTLP only",
    "OTEL_EXPORTER_PROMETHEUS_": "Tandem exports metrics over OTLP only",
    "OTEL_LOG_LEVEL": "Tandem's log level is LOG_LEVEL",
    "OTEL_CONFIG_FILE": "Tandem is configured by environment variables only",
}


@dataclass(frozen=True)
class OtlpOptions:
    """What Tandem passes to one signal's OTLP exporter itself, because it reads it per the
    specification where the Python SDK does not: the timeout in milliseconds (the SDK reads
    seconds), and compression `none` (the SDK refuses it)."""

    timeout_seconds: float = DEFAULT_TIMEOUT_MILLIS / 1000
    gzip: bool = False


@dataclass(frozen=True)
class OtelSettings:
    """The OTEL_* settings that decide how the pipeline is built; the rest the SDK reads."""

    traces_exporters: tuple[str, ...] = ("otlp",)
    metrics_exporters: tuple[str, ...] = ("otlp",)
    sampler: Sampler = DEFAULT_ON
    otlp: Mapping[str, OtlpOptions] = field(
        default_factory=lambda: dict.fromkeys(SIGNALS, OtlpOptions())
    )
    unknown_variables: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> OtelSettings:
        """Check every OTEL_* variable; InvalidEnvVar names the first that cannot be honoured."""
        return cls.read(EnvReader(environ))

    @classmethod
    def read(cls, env: EnvReader) -> OtelSettings:
        env.refuse_unused()
        for name in ("OTEL_SDK_DISABLED", "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"):
            env.flag(name)
        env.key_values("OTEL_RESOURCE_ATTRIBUTES")
        env.names("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "opentelemetry_resource_detector")
        env.names("OTEL_PYTHON_CONTEXT", "opentelemetry_context")
        env.propagators()
        for name in ("OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
            env.whole(name, minimum=1)
        queue = env.whole("OTEL_BSP_MAX_QUEUE_SIZE", minimum=1) or 2048
        batch = env.whole("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", minimum=1) or 512
        if batch > queue:
            raise InvalidEnvVar(
                f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={batch} must not exceed "
                f"OTEL_BSP_MAX_QUEUE_SIZE ({queue})"
            )
        env.whole("OTEL_BSP_SCHEDULE_DELAY", minimum=0)
        env.whole("OTEL_BSP_EXPORT_TIMEOUT", minimum=0)
        env.whole("OTEL_METRIC_EXPORT_INTERVAL", minimum=1)
        env.whole("OTEL_METRIC_EXPORT_TIMEOUT", minimum=0)
        for name in (
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
            "OTEL_ATTRIBUTE_COUNT_LIMIT",
            "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
            "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
            "OTEL_SPAN_EVENT_COUNT_LIMIT",
            "OTEL_SPAN_LINK_COUNT_LIMIT",
            "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
            "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
        ):
            env.whole(name, minimum=0)
        env.choice("OTEL_METRICS_EXEMPLAR_FILTER", ("trace_based", "always_on", "always_off"))
        temporality = ("cumulative", "delta", "lowmemory")
        env.choice("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", temporality)
        env.choice(
            "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
            ("explicit_bucket_histogram", "base2_exponential_bucket_histogram"),
        )
        logs = env.raw("OTEL_LOGS_EXPORTER")
        if logs and logs.lower() != "none":
            raise InvalidEnvVar(f"OTEL_LOGS_EXPORTER={logs!r}: use none, or unset it; {_NO_LOGS}")
        exporters = {signal: env.exporters(signal) for signal in SIGNALS}
        return cls(
            traces_exporters=exporters["traces"],
            metrics_exporters=exporters["metrics"],
            sampler=env.sampler(),
            otlp={signal: env.otlp(signal) for signal in SIGNALS},
            unknown_variables=env.unknown(),
        )

    def warn_unknown(self) -> None:
        """One warning naming the OTEL_* variables nobody defines (the pipeline says it once)."""
        if self.unknown_variables:
            logger.warning(
                "ignoring %s: no OpenTelemetry variable has such a name (misspelt?)",
                ", ".join(self.unknown_variables),
                extra={"variables": list(self.unknown_variables)},
            )


class EnvReader:
    """Reads each variable once and remembers its name, so the unknown ones can be told apart."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.read: set[str] = set()

    def raw(self, name: str) -> str:
        self.read.add(name)
        return self._environ.get(name, "").strip()

    def refuse_unused(self) -> None:
        for name, value in sorted(self._environ.items()):
            if not value.strip():
                continue
            for prefix, reason in REFUSED.items():
                if name == prefix or (prefix.endswith("_") and name.startswith(prefix)):
                    raise InvalidEnvVar(f"{name}={value!r} does nothing here: {reason}; unset it")

    def unknown(self) -> tuple[str, ...]:
        return tuple(
            sorted(
                name
                for name in self._environ
                if name.startswith("OTEL_") and name not in self.read | OTHER_READERS
            )
        )

    def flag(self, name: str) -> bool:
        raw = self.raw(name).lower()
        if raw not in ("", "true", "false"):
            raise InvalidEnvVar(f"{name}={raw!r} is not a boolean; use true or false")
        return raw == "true"

    def whole(self, name: str, *, minimum: int) -> int | None:
        raw = self.raw(name)
        if not raw:
            return None
        if not (raw.isascii() and raw.isdigit()) or int(raw) < minimum:
            raise InvalidEnvVar(f"{name}={raw!r} must be a whole number of at least {minimum}")
        return int(raw)

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        raw = self.raw(name).lower()
        if raw and raw not in choices:
            raise InvalidEnvVar(f"{name}={raw!r}: use one of {', '.join(choices)}")
        return raw or choices[0]

    def names(self, name: str, group: str, *, extra: tuple[str, ...] = ()) -> None:
        """A comma-separated list of names, each of an installed entry point in `group`."""
        raw = self.raw(name)
        installed = {ep.name for ep in entry_points(group=group)} | set(extra)
        for part in filter(None, (part.strip() for part in raw.split(","))):
            if part not in installed:
                raise InvalidEnvVar(
                    f"{name}={raw!r}: {part!r} is not installed; "
                    f"installed: {', '.join(sorted(installed))}"
                )

    def propagators(self) -> None:
        self.names("OTEL_PROPAGATORS", "opentelemetry_propagator", extra=(*W3C_PROPAGATORS, "none"))

    def key_values(self, name: str) -> dict[str, str]:
        """`key=value,key=value` with percent-encoded values (resource attributes, headers)."""
        raw = self.raw(name)
        pairs: dict[str, str] = {}
        for member in filter(None, (part.strip() for part in raw.split(","))):
            key, sep, value = member.partition("=")
            key = key.strip()
            try:
                decoded = unquote(value.strip(), errors="strict")
            except UnicodeDecodeError:
                decoded = None
            if not sep or not _TOKEN.fullmatch(key) or decoded is None:
                raise InvalidEnvVar(
                    f"{name}: {member!r} is not key=value (a token, '=', a percent-encoded value)"
                )
            pairs[key] = decoded
        return pairs

    def exporters(self, signal: str) -> tuple[str, ...]:
        name = f"OTEL_{signal.upper()}_EXPORTER"
        raw = self.raw(name).lower()
        chosen = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
        for exporter in chosen:
            if exporter not in EXPORTERS:
                raise InvalidEnvVar(
                    f"{name}={raw!r}: {exporter!r} is not available; use otlp, console or none"
                )
        if "none" in chosen and len(chosen) > 1:
            raise InvalidEnvVar(f"{name}={raw!r}: none cannot be combined with another exporter")
        if not chosen:
            return ("otlp",)
        return () if chosen == ("none",) else chosen

    def sampler(self) -> Sampler:
        name = self.raw("OTEL_TRACES_SAMPLER").lower() or "parentbased_always_on"
        arg = self.raw("OTEL_TRACES_SAMPLER_ARG")
        if name in _BUILTIN_SAMPLERS:
            if arg:
                raise InvalidEnvVar(
                    f"OTEL_TRACES_SAMPLER_ARG={arg!r}: the {name} sampler takes none; unset it"
                )
            return _BUILTIN_SAMPLERS[name]
        if name in _RATIO_SAMPLERS:
            ratio = _ratio(arg) if arg else 1.0
            return _RATIO_SAMPLERS[name](ratio)
        found = list(entry_points(group="opentelemetry_traces_sampler", name=name))
        if not found:
            # The SDK registers its own samplers as entry points too.
            installed = [ep.name for ep in entry_points(group="opentelemetry_traces_sampler")]
            known = dict.fromkeys([*_BUILTIN_SAMPLERS, *_RATIO_SAMPLERS, *sorted(installed)])
            raise InvalidEnvVar(
                f"OTEL_TRACES_SAMPLER={name!r} is not a sampler here; use one of {', '.join(known)}"
            )
        # A sampler package's factory takes the argument as it was written.
        sampler: Sampler = found[0].load()(arg)
        return sampler

    def otlp(self, signal: str) -> OtlpOptions:
        """One signal's OTLP exporter settings: the signal's own variable, else the general one."""

        def pick(setting: str) -> tuple[str, str]:
            """(the variable that applies, its value); both are checked by the caller."""
            specific = f"OTEL_EXPORTER_OTLP_{signal.upper()}_{setting}"
            general = f"OTEL_EXPORTER_OTLP_{setting}"
            if self.raw(specific):
                return specific, self.raw(specific)
            return general, self.raw(general)

        def both(setting: str) -> tuple[str, str]:
            return f"OTEL_EXPORTER_OTLP_{signal.upper()}_{setting}", f"OTEL_EXPORTER_OTLP_{setting}"

        for variable in both("PROTOCOL"):
            protocol = self.raw(variable)
            if protocol and protocol != "grpc":
                raise InvalidEnvVar(
                    f"{variable}={protocol!r}: Tandem exports over OTLP/gRPC only; use grpc "
                    "(or leave it unset) and point the endpoint at the collector's gRPC port, 4317"
                )
        endpoint_name, endpoint = pick("ENDPOINT")
        plaintext = _check_endpoint(endpoint_name, endpoint)
        shown = endpoint or "http://localhost:4317 (the default)"
        for variable in both("INSECURE"):
            # The endpoint's scheme decides; the SDK would quietly let this flag contradict it.
            insecure = self.raw(variable).lower()
            if insecure and self.flag(variable) != plaintext:
                raise InvalidEnvVar(
                    f"{variable}={insecure} contradicts {endpoint_name}={shown}: http:// is "
                    "plaintext, https:// is TLS; choose the scheme and unset the flag"
                )
        (ca_name, ca), (key_name, key), (chain_name, chain) = (
            pick(setting) for setting in ("CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE")
        )
        for variable, path in ((ca_name, ca), (key_name, key), (chain_name, chain)):
            if path and not os.access(path, os.R_OK):
                raise InvalidEnvVar(f"{variable}={path!r}: no readable file there")
        if ca and plaintext:
            raise InvalidEnvVar(f"{ca_name} is set, but {endpoint_name}={shown} is plaintext")
        if bool(key) != bool(chain) or ((key or chain) and not ca):
            raise InvalidEnvVar(
                f"{key_name} and {chain_name} go together, and with {ca_name} "
                "(the exporter reads a client certificate only beside a CA certificate)"
            )
        for variable in both("HEADERS"):
            self.key_values(variable)
        compression_name, compression = pick("COMPRESSION")
        if compression.lower() not in ("", "gzip", "none"):
            raise InvalidEnvVar(f"{compression_name}={compression!r}: use gzip or none")
        for variable in both("TIMEOUT"):
            self.whole(variable, minimum=1)
        timeout_name, _ = pick("TIMEOUT")
        millis = self.whole(timeout_name, minimum=1) or DEFAULT_TIMEOUT_MILLIS
        return OtlpOptions(timeout_seconds=millis / 1000, gzip=compression.lower() == "gzip")


def _ratio(arg: str) -> float:
    try:
        ratio = float(arg)
    except ValueError:
        raise InvalidEnvVar(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a number") from None
    if not 0.0 <= ratio <= 1.0:
        raise InvalidEnvVar(f"OTEL_TRACES_SAMPLER_ARG={arg!r}: a ratio must be from 0 to 1")
    return ratio


def _check_endpoint(name: str, endpoint: str) -> bool:
    """Whether an OTLP/gRPC endpoint (a URL, or unset for the default) is plaintext."""
    if not endpoint:
        return True
    try:
        url = urlsplit(endpoint)
        url.port  # noqa: B018  # raises ValueError for a port that is no number
    except ValueError:
        url = None
    if (
        url is None
        or url.scheme not in ("http", "https")
        or not url.hostname
        or url.path not in ("", "/")
        or url.query
        or url.fragment
        or url.username is not None
    ):
        raise InvalidEnvVar(
            f"{name}={endpoint!r} is not an OTLP/gRPC endpoint; use http://host:port "
            "(plaintext) or https://host:port, with no path"
        )
    return url.scheme == "http"


# OTEL_* variables read elsewhere in Tandem (bootstrap), not by `OtelSettings.read`.
OTHER_READERS = frozenset({"OTEL_SERVICE_NAME"})


def _import_propagate_api() -> None:
    """Import opentelemetry.propagate without letting a bad OTEL_PROPAGATORS end the import.

    The module loads the propagators the variable names when it is first imported,
    and one it cannot load ends that import in a traceback, before any of Tandem's
    code runs. With such a name, the module is imported with the variable out of its
    sight; `OtelSettings.from_env` then refuses it at start, in one line.
    """
    if "opentelemetry.propagate" in sys.modules:
        return
    try:
        EnvReader(os.environ).propagators()
    except InvalidEnvVar:
        saved = os.environ.pop("OTEL_PROPAGATORS")
        try:
            importlib.import_module("opentelemetry.propagate")
        finally:
            os.environ["OTEL_PROPAGATORS"] = saved


_import_propagate_api()
