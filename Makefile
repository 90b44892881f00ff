# gmm_perception: every target sets up .venv first (idempotent, seconds when nothing changed).
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-unit test-integration bench demo clean

setup:
	@bash tools/setup_env.sh

test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PYTHON) -m pytest test/unit $(PYTEST_ARGS)

test-integration: setup
	$(PYTHON) -m pytest test/integration $(PYTEST_ARGS)

bench: setup
	$(PYTHON) bench/cloud_io.py

# The main job (filled in by the pipeline/evaluation work): for now it proves the stack end to end.
demo: setup
	$(PYTHON) -m gmm_perception.cli demo

clean:
	rm -rf build $(VENV) .pytest_cache
