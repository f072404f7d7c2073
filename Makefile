# The commands a newcomer needs: `make demo` (the whole story, then the broker keeps serving it),
# `make run` (the broker on embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
# The broker's address as clients see it (signed store URLs point there): follows HOST/PORT.
export ESCROW_PUBLIC_URL ?= http://$(HOST):$(PORT)

.PHONY: demo demo-hosted run test install test-peers lint typecheck bench clean

$(BIN)/escrow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,serve]'
	touch $@

install: $(BIN)/escrow

demo: install
	$(BIN)/escrow init
	$(BIN)/escrow demo --broker http://$(HOST):$(PORT) --keep-serving

demo-hosted: install
	$(BIN)/escrow init
	$(BIN)/escrow demo --hosted --broker http://$(HOST):$(PORT)

run: install
	$(BIN)/escrow init
	$(BIN)/escrow serve --host $(HOST) --port $(PORT)

tests/node/node_modules/.package-lock.json: tests/node/package.json
	cd tests/node && npm install --no-audit --no-fund --silent

test-peers: tests/node/node_modules/.package-lock.json

test: install test-peers
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: install typecheck
	$(BIN)/ruff check broker tests bench

# mypy on broker/ (its settings: [tool.mypy] in pyproject.toml); .ci/run runs it before the tests
typecheck: install
	$(BIN)/mypy

bench: install test-peers
	$(BIN)/python bench/deposit.py

clean:
	rm -rf $(VENV) tests/node/node_modules
