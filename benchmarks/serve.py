"""`python -m benchmarks.serve`: serve BENCH_APP (`module:attribute`) exactly like the services.

Same hypercorn configuration as `python -m gateway` (tandem_telemetry.serving:
uvloop, no access log, HOST/PORT/WEB_CONCURRENCY from the environment), so
that the benchmark variants differ only in their instrumentation.
"""

import os

from tandem_telemetry.serving import serve

raise SystemExit(serve(os.environ["BENCH_APP"], int(os.environ.get("PORT", "8000"))))
