# gmm_perception: every target sets up .venv first (idempotent, seconds when nothing changed).
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-unit test-integration sh3d-data bench data demo clean

setup:
	@bash tools/setup_env.sh

# Tests on real shapes (held-out SH3D models) need the data: built from Debian's packages once
# (about 3 minutes, cached); without network the build fails and those tests skip.
test: setup sh3d-data
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-unit: setup sh3d-data
	$(PYTHON) -m pytest test/unit $(PYTEST_ARGS)

test-integration: setup sh3d-data
	$(PYTHON) -m pytest test/integration $(PYTEST_ARGS)

sh3d-data: setup
	-@$(VENV)/bin/gmm-perception data sh3d > /dev/null || \
	  echo "SH3D data could not be built: the tests that need it will skip"

bench: setup
	$(PYTHON) bench/cloud_io.py
	$(PYTHON) bench/metrics.py

# Real shape data from Debian's packages (downloaded with apt-get) and pybullet's wheel (pip
# download), nothing committed, cached in data/; the pool (docs/data.md) in about 3 minutes on 2 cores.
data: setup
	$(VENV)/bin/gmm-perception data sh3d
	$(VENV)/bin/gmm-perception data cgal
	$(VENV)/bin/gmm-perception data pool
	$(VENV)/bin/gmm-perception data seating
	$(VENV)/bin/gmm-perception data pairs --setting noisy
	$(VENV)/bin/gmm-perception data pairs --setting partial

# The main job: a simulated scene bag played into the scene pipeline's nodes, scored against its
# ground truth; prints a summary and the report's path (out/demo/evaluation/report.md).
demo: setup data/sh3d/sh3d_meshes.npz
	$(VENV)/bin/gmm-perception demo

data/sh3d/sh3d_meshes.npz: | setup
	$(VENV)/bin/gmm-perception data sh3d

clean:
	rm -rf build $(VENV) .pytest_cache
