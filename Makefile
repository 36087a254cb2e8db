# The two commands a new user runs: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./homeport-data

.PHONY: run test lint typecheck unit migrate clean

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed pyproject.toml clients/python/pyproject.toml tests/uploads/js/package-lock.json
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e clients/python
	@# tus-js-client for the tus interop tests (skipped locally without npm, required under CI).
	if command -v npm >/dev/null 2>&1; then cd tests/uploads/js && npm ci --no-audit --no-fund --silent; fi
	touch $@

run: $(BIN)/.installed
	$(BIN)/homeport migrate --data-dir $(DATA_DIR)
	$(BIN)/homeport serve --data-dir $(DATA_DIR)

test: $(BIN)/.installed-dev lint typecheck unit

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check src tests scripts migrations bench clients/python
	$(BIN)/ruff format --check src tests scripts migrations bench clients/python
	$(BIN)/python scripts/check_tenant_scope.py

typecheck: $(BIN)/.installed-dev
	$(BIN)/mypy src
	cd clients/python && ../../$(BIN)/mypy src tests

# The suite on two worker processes (each with its own PostgreSQL database, S3 server and
# ports; all PostgreSQL tests on one of them, see tests/conftest.py); TEST_WORKERS=0 runs it
# in one process.
TEST_WORKERS ?= 2

unit: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
