# The two commands of the README: `make run` and `make test`. Both set up .venv from the lock file first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench setup clean db-upgrade

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	mkdir -p var
	$(BIN)/hub db upgrade
	$(BIN)/hub serve

lint: $(STAMP)
	$(BIN)/ruff check hub tests bench migrations
	$(BIN)/ruff format --check hub tests bench migrations
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/hub mappings check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var/*.db
