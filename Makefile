# Every target works from a bare clone: the venv is created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_BASE := $(VENV)/.installed-base
STAMP_DEV := $(VENV)/.installed-dev
STAMP_BENCH := $(VENV)/.installed-bench
# the optional C accelerator is compiled by the install (hatch_build.py): a change
# to its source reinstalls; the install reports whether it is in use
REPORT_ACCEL := $(PY) -c "import aperion_event_bus as a; print('aperion-event-bus: C accelerator', 'in use' if a.ACCELERATED else 'NOT in use (pure Python; see the build warning with pip -v)')"
BUILD_INPUTS := pyproject.toml hatch_build.py src/aperion_event_bus/_speedups.c

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP_BASE): $(BUILD_INPUTS) | $(PY)
	$(PY) -m pip install --quiet -e .
	@$(REPORT_ACCEL)
	touch $@

$(STAMP_DEV): $(BUILD_INPUTS) | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	@$(REPORT_ACCEL)
	touch $@ $(STAMP_BASE)

$(STAMP_BENCH): $(BUILD_INPUTS) $(STAMP_DEV)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

demo: $(STAMP_BASE)
	$(PY) examples/quickstart.py

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check src tests benchmarks examples hatch_build.py
	$(VENV)/bin/mypy

# The suite runs twice: with the C accelerator (when it was built; a test fails if
# it was built but is not in use) and in pure Python, the reference implementation.
test: lint
	$(VENV)/bin/pytest
	APERION_EVENT_BUS_NO_EXTENSIONS=1 $(VENV)/bin/pytest

bench: $(STAMP_BENCH)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/floor.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/redaction.py
	$(PY) benchmarks/store.py
	$(PY) benchmarks/durable.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
