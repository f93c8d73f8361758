# The real OpenTelemetry Collector: `make collector` builds Tandem's distribution
# (collector/otelcol-builder.yaml) with the Collector's builder into .tools/otelcol/,
# cached by the manifest's hash. Needs Go 1.25 or later; the Go module proxy gives
# the rest. `make test` builds it first; tests/otelcol run the chart's configuration in it.
# Included by the root Makefile.

OTELCOL = $(shell mk/collector.sh path)

.PHONY: collector

collector: ## Build the real Collector from collector/otelcol-builder.yaml into .tools/otelcol/ (needs Go; a second run does nothing).
	@mk/collector.sh build

# Real Prometheus (Debian's package, 2.42): tests/otelcol scrapes the real Collector with it
# (tests/prometheus.py starts its own, never the Debian service). `make test` checks for it.
.PHONY: prometheus-check
prometheus-check:
	@command -v prometheus >/dev/null || [ -x /usr/bin/prometheus ] || { echo "make test: prometheus is needed (tests/otelcol runs it against the real Collector): apt-get install prometheus (Debian/Ubuntu; 2.42 in bookworm)" >&2; exit 1; }
