"""The tracer the floors start their bare spans with (benchmarks.apps (e)/(f), benchmarks.hop).

A floor is one span per request or call and nothing else: no attribute, no
context for the code it wraps, no metric, no propagation. It goes through
the pipeline `tandem_telemetry.setup` builds for every traced variant (the
SDK's BatchSpanProcessor, the OTLP/gRPC exporter, the same resource), so
that it differs from those variants only in what it leaves out.
"""

from __future__ import annotations

from typing import Any

from tandem_telemetry import Telemetry, setup


def floor_tracer(service_name: str, *, lean: bool) -> tuple[Any, Telemetry]:
    """The SDK's own Tracer, or with `lean` Tandem's RequestTracer (Tandem's cheapest SDK span)."""
    telemetry = setup(service_name)
    if telemetry.tracer_provider is None:
        raise RuntimeError("a floor needs a live pipeline; OTEL_SDK_DISABLED is set")
    tracer = telemetry.tracer if lean else telemetry.tracer_provider.get_tracer("benchmarks.floor")
    return tracer, telemetry
