# Every target works from a bare clone: the venv is created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_BASE := $(VENV)/.installed-base
STAMP_DEV := $(VENV)/.installed-dev
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP_BASE): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_BASE)

$(STAMP_BENCH): pyproject.toml $(STAMP_DEV)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

demo: $(STAMP_BASE)
	$(PY) examples/quickstart.py

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest

bench: $(STAMP_BENCH)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/floor.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/redaction.py
	$(PY) benchmarks/store.py
	$(PY) benchmarks/durable.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
