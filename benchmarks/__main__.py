"""`python -m benchmarks`: the benchmark harness (`make bench`); see benchmarks/harness.py."""

from benchmarks.harness import main

raise SystemExit(main())
