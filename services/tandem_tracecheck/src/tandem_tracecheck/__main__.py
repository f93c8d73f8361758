"""`python -m tandem_tracecheck`: run every end-to-end check against a running Tandem."""

from __future__ import annotations

import argparse
import os
import sys
import time

from tandem_tracecheck.scenarios import ALL, NEW_TRACE_PROBES, Target
from tandem_tracecheck.tempo import TempoClient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--gateway-url",
        default=os.environ.get("GATEWAY_URL"),
        help="e.g. http://tandem-gateway:8080 (env GATEWAY_URL)",
    )
    parser.add_argument(
        "--tempo-url",
        default=os.environ.get("TEMPO_URL"),
        help="e.g. http://tandem-tempo:3200 (env TEMPO_URL)",
    )
    parser.add_argument(
        "--metrics-url",
        default=os.environ.get("METRICS_URL"),
        help="the collector's Prometheus endpoint (env METRICS_URL)",
    )
    parser.add_argument(
        "--gateway-internal-port",
        type=int,
        default=None,
        help="the gateway's internal port: the worker's quota checks must arrive there "
        "(their spans' server.port); unchecked when not given",
    )
    parser.add_argument(
        "--trace-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for a trace to arrive in Tempo",
    )
    parser.add_argument(
        "--new-trace-probes",
        type=int,
        default=NEW_TRACE_PROBES,
        help="requests without a traceparent to send until the gateway samples one "
        "(raise it for a ratio sampler below about 0.03)",
    )
    args = parser.parse_args(argv)
    if args.new_trace_probes < 1:
        parser.error("--new-trace-probes must be at least 1")
    missing = [
        name for name in ("gateway_url", "tempo_url", "metrics_url") if not getattr(args, name)
    ]
    if missing:
        parser.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))
    target = Target(
        args.gateway_url.rstrip("/"),
        args.tempo_url.rstrip("/"),
        args.metrics_url,
        args.trace_timeout,
        args.gateway_internal_port,
        args.new_trace_probes,
    )

    with TempoClient(target.tempo_url) as tempo:
        deadline = time.monotonic() + args.trace_timeout
        while not tempo.ready():
            if time.monotonic() > deadline:
                print(f"FAIL Tempo at {target.tempo_url} is not ready", file=sys.stderr)
                return 1
            time.sleep(1)

    failed = 0
    for name, check in ALL:
        try:
            checked = check(target)
        except AssertionError as exc:
            failed += 1
            print(f"FAIL {name}\n{exc}\n", flush=True)
        # A check that cannot even run is a failure too, reported with its reason.
        except Exception as exc:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}\n", flush=True)
        else:
            # For a trace: whether its cross-process links were checked by span flag too.
            print(f"ok   {name}" + (f" ({checked})" if checked else ""), flush=True)
    print(f"{len(ALL) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
