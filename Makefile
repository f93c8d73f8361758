# Tandem's entry points. Every target installs what it needs, so a fresh
# machine with only python3 and make can run `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON     ?= python3
UV_VERSION := 0.13.9
TOOLS      := $(CURDIR)/.tools
UV         := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/uv/bin/uv)
VENV       := $(CURDIR)/.venv
VENV_PY    := $(VENV)/bin/python
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS    := never

.PHONY: help install run test

help: ## List the targets.
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(TOOLS)/uv/bin/uv:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(TOOLS)/uv uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml services/*/pyproject.toml collector/pyproject.toml | $(UV)
	$(UV) sync --locked --all-packages --python $(PYTHON)
	@touch $@

install: $(VENV)/.synced ## Build .venv from uv.lock.

run: install ## Run the local collector, the worker and the gateway on loopback.
	$(VENV_PY) -m tandem_collector.localstack

test: install k8s-tools ## Run the whole test suite.
	$(VENV_PY) -m pytest

# Kubernetes targets (chart, skaffold, linters) and the container images live
# in their own files.
-include mk/kubernetes.mk
-include mk/containers.mk
# Benchmarks (make bench).
-include mk/bench.mk
