# One obvious command per job. `make up` and `make test` install what is missing first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: up infra test test-unit lint format schemas bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)
	$(PY) -c "from shared.devstack import kafka_libs; print(kafka_libs())"

up: install
	$(PY) -m shared.stack up

infra: install
	$(PY) -m shared.stack infra

test: install
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

schemas: install
	$(PY) -m shared.schemas write
	$(PY) -m services.command.openapi
	$(PY) -m services.query.openapi

# e.g. make bench BENCH_ARGS="--preset small" (see bench/README.md)
bench: install
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf var/test
