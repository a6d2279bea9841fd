# Entry points: `make demo`, `make test`, `make bench`, `make accuracy`, `make lint`.
# Each creates its own virtual environment (.venv) and installs what it needs, so a fresh
# clone on a machine that has never seen the project needs nothing else than python3 >= 3.11.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# What `make test` installs: the package with every extra its tests touch. torch is pinned to
# the CPU build the project benchmarks against (an unpinned torch would pull a CUDA build).
DEV_EXTRAS := dev,flax,notebooks,bench,torch

.PHONY: demo test bench scaling accuracy lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.core-installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e ".[$(DEV_EXTRAS)]"
	touch $@ $(VENV)/.core-installed

demo: $(VENV)/.core-installed
	$(BIN)/python -m lucid_jax

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.bench

scaling: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.scaling

accuracy: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.accuracy

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check lucid_jax tests benchmarks

format: $(VENV)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format lucid_jax tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
