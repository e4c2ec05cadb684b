# One command surface for the README, CI and contributors. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
WITH_SERVICES := $(BIN)/python -m app.devservices run --
WORKER := arq app.workers.unified_worker.UnifiedWorkerSettings

.DEFAULT_GOAL := help
.PHONY: help install run test lint type check migrate bench

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("memory-worker needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(INSTALLED) ## create .venv and install the package with its dev tools

run: $(INSTALLED) ## start the worker (migrates first; embedded Postgres/Redis when none is configured or running)
	$(WITH_SERVICES) sh -c '$(BIN)/python -m app.prestart && exec $(BIN)/$(WORKER)'

test: $(INSTALLED) ## run the whole test suite against real Postgres and Redis (embedded when none)
	$(WITH_SERVICES) $(BIN)/pytest $(PYTEST_ARGS)

lint: $(INSTALLED) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

type: $(INSTALLED) ## mypy, strict
	$(BIN)/mypy

check: lint type test ## everything CI runs

migrate: $(INSTALLED) ## apply the migrations to the configured database
	$(WITH_SERVICES) $(BIN)/python -m app.prestart

bench: $(INSTALLED) ## run the benchmarks (BENCH_ARGS=--quick for a short run); tables on stdout, JSON in benchmarks/results/
	$(WITH_SERVICES) sh -c 'for b in benchmarks/bench_*.py; do $(BIN)/python -m benchmarks.$$(basename $$b .py) $(BENCH_ARGS) || exit 1; done'
