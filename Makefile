# The virtual environment is made on first use from requirements.lock (exact versions, with
# hashes); every target below depends on it. `make lock` moves the lock forward.
PYTHON ?= python3
# `make pytest` runs the suite in this many pytest-xdist worker processes (0: in one process,
# as a bare `.venv/bin/pytest FILE` does); the suite spends much of its time waiting on
# loopback venues, so two workers finish it well sooner even on two cores.
PYTEST_WORKERS ?= 2
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench lock clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mdgateway needs Python >= 3.11; this is " + sys.version.split()[0] + " (make PYTHON=python3.12 ...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mdgateway demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff format --check gateway feeds tests bench examples
	$(BIN)/ruff check gateway feeds tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS)

bench: $(STAMP)
	$(BIN)/python -m bench

# Resolves the newest versions pyproject.toml allows, for every platform and Python >= 3.11,
# with hashes. Run it after changing a dependency, then `make test` and commit the lock.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml build-requirements.in --extra dev --universal \
		--python-version 3.11 --generate-hashes --upgrade --quiet -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
