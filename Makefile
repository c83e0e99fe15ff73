# Every target creates and uses .venv by itself: a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test bench lab lab-check lint chaos demo strip-notebooks venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "dedup needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## The main job: run the workbench headless on embedded defaults (moto + in-memory/fakeredis).
run: $(STAMP)
	$(PY) -m dedup workbench

## Every test: unit, real-Redis, moto-server, and the notebooks themselves.
test: $(STAMP)
	$(PY) -m pytest --nbmake tests notebooks

## Benchmarks: side-by-side ratios against baselines, measured in one run.
bench: $(STAMP)
	$(PY) -m benchmarks

## One command: embedded AWS, provision, 200 events + 50 injected duplicates, consume, reconcile.
demo: $(STAMP)
	$(PY) -m dedup demo

## Fault-injection run: many consumers, Redis outages, SIGKILLs.
chaos: $(STAMP)
	$(PY) -m dedup chaos

## JupyterLab on notebooks/ (runs as root too); more flags through ARGS, e.g. make lab ARGS="--port=9999 --no-browser".
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --allow-root $(ARGS) notebooks

## Real-browser check: notebook 04 in JupyterLab in headless Debian chromium; screenshots in build/screenshots/.
lab-check: $(STAMP)
	$(PY) -m pytest -q tests/browser
	@ls build/screenshots/*.png

lint: $(STAMP)
	$(VENV)/bin/ruff check dedup tests benchmarks

## Remove outputs and execution counts from the committed notebooks.
strip-notebooks: $(STAMP)
	$(PY) -m dedup.notebook_hygiene --strip notebooks

clean:
	rm -rf build .pytest_cache .hypothesis
