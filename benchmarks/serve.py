"""`python -m benchmarks.serve`: serve BENCH_APP (`module:attribute`) as the services are served.

Same hypercorn configuration as `python -m gateway` (tandem_service.serving:
uvloop, no access log, HOST/PORT/WEB_CONCURRENCY from the environment), so
that the benchmark variants differ only in their instrumentation. With
BENCH_INTERNAL_APP, that app is served too, on INTERNAL_PORT, in the same
process: the gateway's two listeners.
"""

import os

from tandem_service import Listener, serve


def bench_listeners() -> dict[Listener, str]:
    """BENCH_APP on PORT, and BENCH_INTERNAL_APP (if set) on INTERNAL_PORT."""
    listeners = {Listener.public(8000): os.environ["BENCH_APP"]}
    internal = os.environ.get("BENCH_INTERNAL_APP")
    if internal:
        listeners[Listener("INTERNAL_PORT", 8001)] = internal
    return listeners


if __name__ == "__main__":
    raise SystemExit(serve(bench_listeners()))
