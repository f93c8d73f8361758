# Benchmarks: `make bench` measures every section of benchmarks/ into
# benchmarks/results.json, then renders docs/benchmarks.md and its charts from
# that file alone; `make bench-overload` measures only the overload section and
# replaces it in the file. `make bench-report RESULTS=...` renders a saved file
# again; `make bench-compare A=... B=...` sets two saved runs side by side.
# Included by the root Makefile, which defines VENV_PY, TOOLS and CURDIR. Not
# part of `make test`; the harness's smoke run (tests/bench) is.
#
# The load generator is wrk. Where it is missing and apt-get exists, it is
# installed (with sudo when not root); anywhere else the target stops and
# says so.

BENCH_ARGS ?=
RESULTS ?= $(CURDIR)/benchmarks/results.json
A ?=
B ?= $(CURDIR)/benchmarks/results.json
BENCH_SUDO := $(shell [ "$$(id -u 2>/dev/null)" = 0 ] || command -v sudo 2>/dev/null)

.PHONY: bench bench-overload bench-report bench-compare bench-wrk bench-collector

bench: install bench-wrk ## Benchmark on loopback with wrk (~35 min); writes benchmarks/results.json, docs/benchmarks.md and its charts.
	BENCH_COMMAND="make bench" $(VENV_PY) -m benchmarks --loadgen wrk --results $(RESULTS) $(BENCH_ARGS)
	$(VENV_PY) -m benchmarks.render $(RESULTS) --out $(CURDIR)/docs

bench-overload: install bench-wrk ## Only make bench's overload section (~15 min); replaces it in the results and docs/benchmarks.md.
	BENCH_COMMAND="make bench-overload" $(VENV_PY) -m benchmarks --only overload --loadgen wrk --results $(RESULTS) $(BENCH_ARGS)
	$(VENV_PY) -m benchmarks.render $(RESULTS) --out $(CURDIR)/docs

bench-report: install ## docs/benchmarks.md and its charts again from a saved results file (RESULTS=..., default benchmarks/results.json); measures nothing.
	$(VENV_PY) -m benchmarks.render $(RESULTS) --out $(CURDIR)/docs

bench-compare: install ## Two saved runs side by side (A=old.json B=new.json, B defaulting to benchmarks/results.json): each ratio and its spread, and which moved beyond the noise of their rounds.
	@test -n "$(A)" || { echo "make bench-compare: name the earlier results file, A=path/to/results.json" >&2; exit 2; }
	$(VENV_PY) -m benchmarks.compare $(A) $(B)

bench-wrk:
	@if command -v wrk >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make bench: wrk is not installed and there is no apt-get to install it with;" >&2; \
	  echo "make bench: install wrk (https://github.com/wg/wrk) and run make bench again." >&2; \
	  exit 1; \
	fi; \
	echo "make bench: installing wrk with apt-get"; \
	$(BENCH_SUDO) apt-get update -qq && $(BENCH_SUDO) apt-get install -y -qq wrk || { echo "make bench: apt-get could not install wrk" >&2; exit 1; }; \
	command -v wrk >/dev/null 2>&1 || { echo "make bench: wrk is still missing after apt-get install" >&2; exit 1; }

bench-collector: install collector ## The real Collector's capacity with the chart's configuration (~5 min); prints the tables docs/collector.md holds.
	$(VENV_PY) -m benchmarks.collector_capacity --otelcol $(OTELCOL) $(BENCH_ARGS)
