# Two commands for a fresh machine:
#   make pretrain   creates .venv, installs regioncl, pretrains RegionCL-M on the built-in sample set
#   make test       creates .venv, installs regioncl[dev,bench], runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv pretrain test test-fast lint format benchmark clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

venv: $(VENV)/.installed

pretrain: venv
	$(PY) scripts/pretrain.py $(ARGS)

# a pytest-xdist worker per core (tests/conftest.py gives each its share of the threads); a test file's tests stay
# on one worker, so its module fixtures are built once
test: venv
	$(PY) -m pytest -q -n auto --dist loadscope $(ARGS)

# the unit tests: everything but the tests marked slow (multi-process, end-to-end, whole runs)
test-fast: venv
	$(PY) -m pytest -q -n auto --dist loadscope -m "not slow" $(ARGS)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

benchmark: venv
	$(PY) scripts/benchmark.py $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
