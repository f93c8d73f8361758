"""`python -m benchmarks.diag_serve`: serve BENCH_APP like benchmarks.serve, with a diagnostic
change.

Used to answer "what if" questions while profiling (benchmarks/NOTES.md);
never by `make bench`. DIAG is a comma-separated list:

    null  spans are made and batched as usual, but the exporter drops them:
          what the request path costs without the OTLP encoding and send
    dropnow  no batch processor: each span is dropped as it ends, so it is
          freed at once, on the serving thread
    nogc  the cyclic garbage collector is disabled once serving starts
    gcstats  time every garbage collection, by generation; written to $DIAG_GCSTATS at exit
    mainfree  exported span batches are released on the serving thread (event loop), not the
          exporter's
    nohist  the middleware's http.server.request.duration histogram is a no-op
    gc    after importing the app: gc.collect(), gc.freeze(), and a gen-0
          threshold of 50 000: what the cyclic GC costs the traced path

DIAG_SERVICE names the service for the pipeline built here (before the app's
own setup(), which then returns this one). BENCH_INTERNAL_APP is served on
INTERNAL_PORT too, as benchmarks.serve does.
"""

import gc
import importlib
import os

import tandem_telemetry
from benchmarks.serve import bench_listeners
from tandem_service import serve

modes = {m.strip() for m in os.environ.get("DIAG", "").split(",") if m.strip()}
application = os.environ["BENCH_APP"]
if "null" in modes:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class _Drop(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tandem_telemetry.setup(os.environ["DIAG_SERVICE"], span_exporter=_Drop())
if "dropnow" in modes:
    from opentelemetry.sdk.trace import SpanProcessor

    tandem_telemetry.setup(os.environ["DIAG_SERVICE"], span_processor=SpanProcessor())
if "nohist" in modes:
    from opentelemetry.metrics import NoOpHistogram

    telemetry = tandem_telemetry.setup(os.environ["DIAG_SERVICE"])
    telemetry.server_duration = NoOpHistogram("http.server.request.duration")
if "gc" in modes:
    importlib.import_module(application.partition(":")[0])
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
if "mainfree" in modes:
    import asyncio

    import tandem_telemetry.delivery as delivery
    import tandem_telemetry.middleware as middleware

    _loop: list[asyncio.AbstractEventLoop] = []
    _original_call = middleware.TracingMiddleware.__call__

    async def _remember_loop(self, scope, receive, send):
        if not _loop:
            _loop.append(asyncio.get_running_loop())
        await _original_call(self, scope, receive, send)

    middleware.TracingMiddleware.__call__ = _remember_loop  # type: ignore[method-assign]  # the diagnostic patch
    _original_export = delivery.AccountedSpanExporter.export

    def _export_then_release_on_loop(self, spans):
        result = _original_export(self, spans)
        if _loop:
            _loop[0].call_soon_threadsafe(_loop[0].call_later, 0.05, lambda batch: None, spans)
        return result

    delivery.AccountedSpanExporter.export = _export_then_release_on_loop  # type: ignore[method-assign]  # the diagnostic patch
if "gcstats" in modes:
    import atexit
    import json
    import time

    _stats: dict[int, list[float]] = {0: [0, 0.0, 0], 1: [0, 0.0, 0], 2: [0, 0.0, 0]}
    _started = [0.0]

    def _time_collections(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
        else:
            entry = _stats[info["generation"]]
            entry[0] += 1
            entry[1] += time.perf_counter() - _started[0]
            entry[2] += info.get("collected", 0)

    gc.callbacks.append(_time_collections)

    def _write_gcstats() -> None:
        with open(os.environ["DIAG_GCSTATS"], "w") as out:
            out.write(json.dumps(_stats))

    atexit.register(_write_gcstats)
if "nogc" in modes:
    import tandem_service.serving as serving

    _original_freeze = gc.freeze

    def _freeze_and_disable() -> None:
        _original_freeze()
        gc.disable()

    serving.gc.freeze = _freeze_and_disable
raise SystemExit(serve(bench_listeners()))
