"""`python -m benchmarks.diag_serve`: serve BENCH_APP like benchmarks.serve, with a diagnostic change.

Used to answer "what if" questions while profiling (benchmarks/NOTES.md);
never by `make bench`. DIAG is a comma-separated list:

    null  spans are made and batched as usual, but the exporter drops them:
          what the request path costs without the OTLP encoding and send
    nohist  the middleware's http.server.request.duration histogram is a no-op
    gc    after importing the app: gc.collect(), gc.freeze(), and a gen-0
          threshold of 50 000: what the cyclic GC costs the traced path

DIAG_SERVICE names the service for the pipeline built here (before the app's
own setup(), which then returns this one).
"""

import gc
import importlib
import os

import tandem_telemetry
from tandem_telemetry.serving import serve

modes = {m.strip() for m in os.environ.get("DIAG", "").split(",") if m.strip()}
application = os.environ["BENCH_APP"]
if "null" in modes:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class _Drop(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tandem_telemetry.setup(os.environ["DIAG_SERVICE"], span_exporter=_Drop())
if "nohist" in modes:
    from opentelemetry.metrics import NoOpHistogram

    telemetry = tandem_telemetry.setup(os.environ["DIAG_SERVICE"])
    telemetry.server_duration = NoOpHistogram("http.server.request.duration")
if "gc" in modes:
    importlib.import_module(application.partition(":")[0])
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
raise SystemExit(serve(application, int(os.environ.get("PORT", "8000"))))
