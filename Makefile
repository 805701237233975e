# tasklease: `make run` starts a broker, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= .tasklease

.PHONY: run test lint typecheck unit bench clean install soak

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,postgres,hsm]'
	@touch $@ $(VENV)/.run-deps

install: $(VENV)/.run-deps

run: $(VENV)/.run-deps
	@if [ ! -f $(DATA)/config.toml ]; then \
	  $(BIN)/tasklease init --data-dir $(DATA) --secret-file $(DATA)/admin-secret; \
	fi
	@echo "Admin secret: run 'cat $(DATA)/admin-secret' (or set TASKLEASE_ADMIN_SECRET)."
	@echo "Signing keys are encrypted; their passphrase (KEK): $(DATA)/key-passphrase, unless TASKLEASE_KEY_PASSPHRASE is set."
	@echo "Try: curl -s http://127.0.0.1:8080/v1/health"
	$(BIN)/tasklease serve --data-dir $(DATA)

lint: $(VENV)/.test-deps
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

unit: $(VENV)/.test-deps
	sh scripts/ensure-postgres.sh
	sh scripts/ensure-softhsm.sh
	sh scripts/ensure-faketime.sh
	$(BIN)/pytest

test: lint typecheck unit

# The authority model at 100,000 steps and more (not in CI): memory and SQLite stores.
soak: $(VENV)/.test-deps
	TASKLEASE_MODEL_EXAMPLES=1250 TASKLEASE_MODEL_STEPS=80 \
	  $(BIN)/pytest -p no:cacheprovider -o addopts="" --timeout 0 tests/core/test_authority_model.py

bench: $(VENV)/.test-deps
	$(BIN)/python -m bench

.PHONY: bench-propagation
bench-propagation: $(VENV)/.test-deps
	sh scripts/ensure-postgres.sh
	$(BIN)/python -m bench.propagation

.PHONY: bench-postgres
bench-postgres: $(VENV)/.test-deps
	sh scripts/ensure-postgres.sh
	$(BIN)/python -m bench --database postgresql

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
