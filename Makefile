# Tandem's entry points. Every target installs what it needs, so a fresh
# machine with python3 (3.11 or later) and make can run `make run`; `make test`
# needs more (README.md's first lines: npm for helm, and the container suite's tools).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON     ?= python3
UV_VERSION := 0.13.9
TOOLS      := $(CURDIR)/.tools
# uv: the one on PATH if it is UV_VERSION (the lock and the committed exports are
# that version's), else the one mk/bootstrap.sh installs into .tools/uv.
UV_ON_PATH := $(shell uv=$$(command -v uv) && [ "$$("$$uv" --version 2>/dev/null | cut -d' ' -f2)" = $(UV_VERSION) ] && echo "$$uv")
UV         := $(or $(UV_ON_PATH),$(TOOLS)/uv/bin/uv)
VENV       := $(CURDIR)/.venv
VENV_PY    := $(VENV)/bin/python
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS    := never

.PHONY: help install run test lint reliability-report

help: ## List the targets.
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# With python3's pip, or, where python3 has none (Debian, Ubuntu), pip from a venv;
# failing both, one line says what to install.
$(TOOLS)/uv/bin/uv:
	@mk/bootstrap.sh install-uv $(PYTHON) $(UV_VERSION) $(TOOLS)/uv

$(VENV)/.synced: uv.lock pyproject.toml services/*/pyproject.toml collector/pyproject.toml | $(UV)
	@mk/bootstrap.sh check-python $(PYTHON)
	$(UV) sync --locked --all-packages --python $(PYTHON)
	@touch $@

install: $(VENV)/.synced ## Build .venv from uv.lock.

reliability-report: install ## Run tests/reliability and rewrite docs/reliability.md from it (make test writes .run/ instead).
	TANDEM_RELIABILITY_REPORT=$(CURDIR)/docs/reliability.md $(VENV_PY) -m pytest tests/reliability

# COLLECTOR=otelcol: the real Collector (make collector) between the services and the
# local trace store, with the chart's configuration.
COLLECTOR ?= python
run: install $(if $(filter otelcol,$(COLLECTOR)),collector) ## Run the local collector, the worker and the gateway on loopback (COLLECTOR=otelcol: the real Collector in between).
	@case '$(COLLECTOR)' in python|otelcol) ;; *) echo "make run: COLLECTOR=$(COLLECTOR): python (the default) or otelcol" >&2; exit 1 ;; esac
	$(if $(filter otelcol,$(COLLECTOR)),TANDEM_RUN_OTELCOL=$(OTELCOL) TANDEM_RUN_OTELCOL_CONFIG=$(CURDIR)/$(CHART)/files/otelcol-config.yaml) $(VENV_PY) -m tandem_localstack

# --- The oldest supported OpenTelemetry ------------------------------------------
# services/tandem_telemetry/pyproject.toml's lower bound, in a venv of its own: the lock's
# versions of everything else, OpenTelemetry (and the protobuf packages it accepts) at
# that release. `make test` runs the public-path suites there.
OTEL_FLOOR      := $(shell sed -n 's/.*"opentelemetry-sdk>=\([0-9.]*\),.*/\1/p' services/tandem_telemetry/pyproject.toml)
OTEL_FLOOR_VENV := $(TOOLS)/venvs/otel-floor-$(OTEL_FLOOR)
# What the SDK path can change: the package's own tests, the service package's in-process
# tests, and the real processes. Left to the first run, once: the fast path's differential
# tests, the stand-in's flush imitation (test_stored_traces: the same scenarios as
# test_linked_spans, against stored traces) and the overload run on real processes (its spans
# are checked in-process here, by tests/service).
PUBLIC_PATH_SUITES := tests/telemetry tests/service tests/integration \
  --ignore=tests/telemetry/fastpath --ignore=tests/integration/test_stored_traces.py \
  --ignore=tests/integration/test_overload.py -m "not fast_path"
# The workspace members (pyproject.toml): every package under services/, and the collector.
WORKSPACE_PACKAGES := $(patsubst %/pyproject.toml,%,$(wildcard services/*/pyproject.toml)) collector

$(OTEL_FLOOR_VENV)/.installed: uv.lock pyproject.toml services/*/pyproject.toml collector/pyproject.toml | $(UV)
	@[ -n "$(OTEL_FLOOR)" ] || { echo "make: no opentelemetry-sdk lower bound in services/tandem_telemetry/pyproject.toml" >&2; exit 1; }
	rm -rf $(OTEL_FLOOR_VENV)
	$(UV) venv --quiet --python $(PYTHON) $(OTEL_FLOOR_VENV)
	$(UV) export --quiet --frozen --all-packages --no-hashes --no-emit-workspace --format requirements.txt \
	  | grep -vE '^(opentelemetry-|protobuf==|googleapis-common-protos==)' > $(OTEL_FLOOR_VENV)/constraints.txt
	$(UV) pip install --quiet --python $(OTEL_FLOOR_VENV)/bin/python --constraint $(OTEL_FLOOR_VENV)/constraints.txt \
	  $(addprefix -e ,$(WORKSPACE_PACKAGES)) pytest hypothesis pyyaml trustme \
	  $(foreach p,api sdk exporter-otlp-proto-grpc propagator-b3,opentelemetry-$(p)==$(OTEL_FLOOR))
	@touch $@

lint: install ## ruff (lint and format) and mypy, as configured in pyproject.toml.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install lint k8s-tools collector prometheus-check $(OTEL_FLOOR_VENV)/.installed ## Lint, then the whole test suite, then the telemetry, service and integration suites on the public path and on the oldest supported OpenTelemetry.
	$(VENV_PY) -m pytest
	@echo "make test: tests/telemetry, tests/service and tests/integration again, with TANDEM_FAST_PATH=off (the public API path)"
	TANDEM_FAST_PATH=off $(VENV_PY) -m pytest -p no:cacheprovider $(PUBLIC_PATH_SUITES)
	@echo "make test: tests/telemetry, tests/service and tests/integration on the oldest supported OpenTelemetry, $(OTEL_FLOOR), where TANDEM_FAST_PATH=auto takes the public path;"
	@echo "make test: the fast path's differential tests (tests/telemetry/fastpath, marker fast_path) ran above, on the release it lists"
	$(OTEL_FLOOR_VENV)/bin/python -m pytest -p no:cacheprovider $(PUBLIC_PATH_SUITES)


# Kubernetes targets (chart, skaffold, linters) and the container images live
# in their own files.
-include mk/kubernetes.mk
-include mk/containers.mk
# The real OpenTelemetry Collector (make collector).
-include mk/collector.mk
# Benchmarks (make bench).
-include mk/bench.mk
