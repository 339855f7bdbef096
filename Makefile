# Two commands: `make demo` and `make test`. Each does all set-up first (the virtual
# environment in .venv/, dependencies, the package in editable mode).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rnnlab-installed

.PHONY: demo test setup lint unit clean bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: this machine's CPU wheel, not a CUDA build from the index
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The main job: the lecture tour (one measured experiment per lecture claim), then the path of
# its HTML report. Replaces runs/tour/.
demo: $(STAMP)
	$(VENV)/bin/rnnlab run tour --out runs

lint: $(STAMP)
	$(VENV)/bin/ruff check $(wildcard src tests benchmarks scripts examples)
	$(VENV)/bin/mypy

unit: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q --durations=15

test: lint unit

bench: $(STAMP)
	$(VENV)/bin/rnnlab bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
