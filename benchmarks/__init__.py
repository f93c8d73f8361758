"""Tandem's benchmark harness: `make bench` (`python -m benchmarks`).

Results go to docs/benchmarks.md and docs/benchmarks.png; see harness.py for
what is measured and how. Nothing here is imported by the services.
"""
