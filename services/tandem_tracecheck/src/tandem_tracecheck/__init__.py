"""End-to-end checks of a running Tandem, through Tempo's HTTP API and the collector's
Prometheus endpoint.

The same code runs in the local integration tests (against tandem_collector)
and in the cluster (`helm test`, `make e2e`, against a real Tempo).
"""

from tandem_tracecheck.spans import Span, parse_trace
from tandem_tracecheck.tempo import TempoClient
from tandem_tracecheck.tree import Expect, TreeMatch, check_tree, match_tree, work_trace

__all__ = [
    "Expect",
    "Span",
    "TempoClient",
    "TreeMatch",
    "check_tree",
    "match_tree",
    "parse_trace",
    "work_trace",
]
