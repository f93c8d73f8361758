"""Tests of tandem_tracecheck: the trace matcher and the Tempo client."""
