# tasklease: `make run` starts a broker, `make test` runs every check; `make help` lists all.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= .tasklease
# Where `make run` serves: TASKLEASE_HOST and TASKLEASE_PORT, as `tasklease serve` reads them.
RUN_HOST := $(or $(TASKLEASE_HOST),127.0.0.1)
RUN_PORT := $(or $(TASKLEASE_PORT),8080)
# Bytecode is written even where the environment asks Python not to: each test process
# would otherwise compile every test module again, asserts rewritten (13 s a process), and
# every broker and CLI process it starts every tasklease module it imports.
KEEP_BYTECODE := PYTHONDONTWRITEBYTECODE=
# Test processes for `make unit` (a file's tests stay on one process; `serial` ones run after).
# Three on two cores: much of a test's time is spent waiting on its brokers and sockets.
TEST_JOBS ?= 3

.PHONY: run test lint typecheck unit bench clean install soak help lock

help: ## this list
	@echo "tasklease: make TARGET"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)$$/  \1\t\2/' | expand -t 22

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The broker and its command: the `cli` extra (with `server`); `pip install tasklease`
# alone is the agent SDK and the verifier.
$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[cli]'
	@touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[cli,postgres,hsm,otel,test]'
	@touch $@ $(VENV)/.run-deps

install: $(VENV)/.run-deps ## install tasklease in .venv

run: $(VENV)/.run-deps ## start a broker on 127.0.0.1:8080 (TASKLEASE_PORT to change), data in .tasklease
	@$(BIN)/python scripts/port_free.py $(RUN_HOST) $(RUN_PORT)
	@if [ ! -f $(DATA)/config.toml ]; then \
	  $(BIN)/tasklease init --data-dir $(DATA) --secret-file $(DATA)/admin-secret; \
	fi
	@echo "Admin secret: run 'cat $(DATA)/admin-secret' (or set TASKLEASE_ADMIN_SECRET)."
	@echo "Signing keys are encrypted; their passphrase (KEK): $(DATA)/key-passphrase, unless TASKLEASE_KEY_PASSPHRASE is set."
	@echo "Try: curl -s http://$(RUN_HOST):$(RUN_PORT)/v1/health  (console: http://$(RUN_HOST):$(RUN_PORT)/console)"
	$(BIN)/tasklease serve --data-dir $(DATA)

lint: $(VENV)/.test-deps ## ruff: lint and format check
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(VENV)/.test-deps ## mypy --strict
	$(BIN)/mypy

unit: $(VENV)/.test-deps ## the test suite (installs PostgreSQL, SoftHSM, faketime, Chromium, systemd-analyze if missing)
	sh scripts/ensure-postgres.sh
	sh scripts/ensure-chromium.sh
	sh scripts/ensure-softhsm.sh
	sh scripts/ensure-faketime.sh
	sh scripts/ensure-systemd-analyze.sh
	$(KEEP_BYTECODE) $(BIN)/pytest -n $(TEST_JOBS) --dist loadfile -m "not serial and not soak"
	$(KEEP_BYTECODE) $(BIN)/pytest -m "serial and not soak"

test: lint typecheck unit ## every check: lint, typecheck, unit

# deploy/requirements.lock: tasklease[cli,postgres]'s dependencies pinned with the hashes of every
# file of each version (docs/operations.md, "Installing for production"). Needs the package
# index; uv (the resolver) goes into .venv for this only. UPGRADE=1 moves every pin to its
# newest version that pyproject.toml allows; without it, pins that still fit are kept.
UV_VERSION := 0.13.10
lock: | $(BIN)/python ## re-lock deploy/requirements.lock (UPGRADE=1: newest versions); needs the package index
	$(BIN)/pip install --quiet 'uv==$(UV_VERSION)'
	$(BIN)/python scripts/lock.py $(if $(UPGRADE),--upgrade)

# The authority model at 100,000 steps and more (not in CI): memory and SQLite stores; the
# fleet test with the broker away for 45 s (CI runs it with 3 s); the tests marked `soak`
# (the benchmarks run on PostgreSQL).
soak: $(VENV)/.test-deps ## the authority model at 100,000 steps, the fleet through a 45 s outage, the `soak` tests (not in CI)
	sh scripts/ensure-postgres.sh
	$(KEEP_BYTECODE) $(BIN)/pytest -n $(TEST_JOBS) --dist loadfile -m soak
	TASKLEASE_MODEL_EXAMPLES=1250 TASKLEASE_MODEL_STEPS=80 \
	  $(BIN)/pytest -p no:cacheprovider -o addopts="" --timeout 0 tests/core/test_authority_model.py
	TASKLEASE_MODEL_EXAMPLES=300 TASKLEASE_MODEL_STEPS=40 \
	  $(BIN)/pytest -p no:cacheprovider -o addopts="" --timeout 0 \
	  tests/security/test_authority_model_http.py
	TASKLEASE_FLEET_OUTAGE=45 $(BIN)/pytest -p no:cacheprovider tests/verify/test_fleet_outage.py

bench: $(VENV)/.test-deps ## throughput benchmarks
	$(BIN)/python -m bench

.PHONY: bench-propagation
bench-propagation: $(VENV)/.test-deps ## revocation propagation benchmark (PostgreSQL)
	sh scripts/ensure-postgres.sh
	$(BIN)/python -m bench.propagation

.PHONY: bench-postgres
bench-postgres: $(VENV)/.test-deps ## benchmarks on PostgreSQL
	sh scripts/ensure-postgres.sh
	$(BIN)/python -m bench --database postgresql

clean: ## remove .venv and build outputs
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
