# Two commands: `make demo` and `make test` (and `make docs`, the site in site/). Each does all set-up first (the virtual
# environment in .venv/, dependencies, the package in editable mode).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rnnlab-installed
DOCS_STAMP := $(VENV)/.rnnlab-docs-installed

.PHONY: demo test setup lint unit clean bench docs

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

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[dev,docs]'
	touch $(DOCS_STAMP)

# The documentation site in site/ (open site/index.html). Strict: a warning, a broken internal
# link, a missing reference, reST left as text or a failing example fails it. The doctest
# builder runs the reference's examples; the HTML build runs the tutorials' code blocks.
# Both share one doctree cache (docs/_build/doctrees).
SPHINX := OMP_NUM_THREADS=2 $(PY) -m sphinx -W --keep-going -q -d docs/_build/doctrees
docs: $(DOCS_STAMP)
	rm -rf site docs/_build
	$(SPHINX) -b html docs site
	$(SPHINX) -b doctest docs docs/_build/doctest
	$(PY) docs/_ext/check_site.py site
	@echo "docs: open site/index.html"

bench: $(STAMP)
	$(VENV)/bin/rnnlab bench --quick

clean:
	rm -rf $(VENV) site docs/_build docs/reference/api .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
