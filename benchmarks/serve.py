"""`python -m benchmarks.serve`: serve BENCH_APP (`module:attribute`) exactly as the services are served.

Same hypercorn configuration as `python -m gateway` (tandem_service.serving:
uvloop, no access log, HOST/PORT/WEB_CONCURRENCY from the environment), so
that the benchmark variants differ only in their instrumentation.
"""

import os

from tandem_service import serve

raise SystemExit(serve(os.environ["BENCH_APP"], int(os.environ.get("PORT", "8000"))))
