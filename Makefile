# Entry points: `make demo` and `make test` (the README's two commands); `make test-notebooks`,
# `make docs`, `make bench`, `make accuracy`, `make scaling`, `make lint`, `make dist`; and the
# heavier checks `.ci/run` adds: `make test-wheel`, `make test-oldest`, `make test-peers`.
# Each creates its own virtual environment and installs what it needs, so a fresh clone on a
# machine that has never seen the project needs nothing else than python3 >= 3.11.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --quiet
# Packages are installed by uv (from PyPI, into .venv first): it resolves and fills an
# environment in seconds where pip takes tens of seconds, which is most of what each CI step
# spends outside its tests. `$(INSTALL) <venv python> <requirements>`. uv makes the other
# environments too (`$(NEW_VENV)`: at once, where `python -m venv` spends seconds installing
# pip); pip stays for what Colab itself runs (the notebooks' `%pip install` cells: `--seed`).
UV      := $(BIN)/uv
NEW_VENV := UV_PYTHON_DOWNLOADS=never $(UV) venv --quiet --python
INSTALL := $(UV) pip install --quiet --python
# Bytecode is compiled when a module is first imported and kept under build/pycache (out of the
# source tree), so that each later process (the suite's workers, the notebooks' kernels, the
# tests' subprocesses) imports it compiled: without it each process compiles jax and flax again
# (5.3 s against 1.7 s to import jax, flax and optax). Compiling at install instead
# (--compile-bytecode) compiles every installed module, used or not: 20-30 s per environment.
# A machine that sets PYTHONDONTWRITEBYTECODE would have each process compile: unset here.
export PYTHONDONTWRITEBYTECODE :=
export PYTHONPYCACHEPREFIX := $(CURDIR)/build/pycache
# What `make test` installs: the package (editable) with the extras its tests touch. Not
# torch: the comparisons with PyTorch skip without it (`make test-peers` runs them).
DEV_EXTRAS := dev,flax,notebooks,bench
# The PyTorch `make test-peers` installs (with uv, which unpacks its 190 MB wheel in seconds
# where pip takes half a minute). The pin matches the CPU wheel kept on our machines, in the
# folder pip's PIP_FIND_LINKS names there (uv does not read pip's settings: passed on here);
# elsewhere choose the CPU build, e.g.
#   make test-peers TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0 $(if $(PIP_FIND_LINKS),$(addprefix --find-links ,$(PIP_FIND_LINKS)))
# The oldest versions the package declares and `make test-oldest` checks (see pyproject.toml):
# the core on jax 0.6.1, and beside it the flax extra's floor, flax 0.12.5, on the oldest jax
# it takes.
OLDEST_PINS := jax==0.6.1 jaxlib==0.6.1 numpy==2.0.2
OLDEST_FLAX_PINS := flax==0.12.5 jax==0.8.1 jaxlib==0.8.1 numpy==2.0.2
OLDEST_TEST_DEPS := "pytest<9.2" pytest-xdist hypothesis scipy chex optax scikit-learn
# pytest-xdist workers per suite run: one per core of the 2-core machine CI runs on.
WORKERS ?= 2
PYTEST_FLAGS = -p no:cacheprovider -n $(WORKERS) --dist loadgroup

# A second Python, 3.12 (Colab's), where one is installed: `make test-wheel` and
# `make test-colab` use it, `make test` and `make test-oldest` the default python3.
# (A pyenv shim for python3.12 exists but fails when 3.12 is not selected: try each candidate.)
PYTHON312 ?= $(firstword $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12; \
	do "$$p" -c "" 2>/dev/null && echo "$$p"; done) $(PYTHON))

# $(call beside,LOG,BESIDE,MAIN,TITLE): the shell command BESIDE in the background, its output
# kept in LOG, while MAIN runs; then LOG, shown under "== TITLE, run beside:"; fails if either
# failed. (`$(,)` puts a comma in an argument.)
, := ,
define beside
{ $(strip $(2)) > $(1) 2>&1 & beside=$$!; $(strip $(3)); main=$$?; \
	wait $$beside; other=$$?; echo "== $(strip $(4)), run beside:"; cat $(1); \
	[ $$main -eq 0 ] && [ $$other -eq 0 ]; }
endef

.PHONY: docs notebooks demo test test-peers test-wheel test-oldest test-colab dist bench scaling accuracy \
	lint format clean

# The venv without pip (ensurepip spends ~5 s installing it), and uv put in by the pip of
# $(PYTHON) (pip >= 22.3 installs into another environment); where that pip is missing or
# older, the venv gets its own pip after all.
$(BIN)/python:
	$(PYTHON) -m venv --without-pip $(VENV)

$(UV): | $(BIN)/python
	$(PYTHON) -m pip --quiet --python $(BIN)/python install "uv>=0.9" 2>/dev/null || \
		{ $(BIN)/python -m ensurepip --default-pip >/dev/null && $(PIP) install "uv>=0.9"; }

SOURCES := $(shell find lucid_jax -name "*.py")

# The demo installs the package as a user would (not editable: setuptools warns about every
# editable mode), again whenever a source file changes.
$(VENV)/.core-installed: pyproject.toml $(SOURCES) | $(UV)
	$(INSTALL) $(BIN)/python --reinstall-package lucid-jax .
	touch $@

# The tests run against the sources (editable install, and `python -m pytest` from the root).
$(VENV)/.dev-installed: pyproject.toml | $(UV)
	$(INSTALL) $(BIN)/python -e ".[$(DEV_EXTRAS)]"
	touch $@

demo: $(VENV)/.core-installed
	@$(BIN)/python -m lucid_jax

# The notebooks, executed end to end and checked (tests/test_notebooks.py, marker `notebooks`:
# `make test` leaves them out), kept where LUCID_JAX_EXECUTED_NOTEBOOKS says: the docs site
# renders these, never executes them again.
EXECUTED := build/notebooks
NOTEBOOKS := $(wildcard notebooks/*.ipynb)

# `make test`: the suite in two processes side by side. The xdist workers compile with XLA:CPU's
# elemental emitters (LUCID_JAX_TEST_FAST_COMPILE=1: half the compile time, the same HLO;
# tests/conftest.py says what was compared); beside them one process runs the tests marked
# `default_codegen` (the numerics: what users' XLA computes) as XLA compiles by default, its
# output kept and shown after. Every other suite (`make test-wheel`, `make test-oldest`, ...)
# compiles as XLA's default throughout.
TEST_MARKERS := not benchmarks and not notebooks
test: $(VENV)/.dev-installed
	mkdir -p build
	$(call beside,build/test-default-codegen.log,\
		$(BIN)/python -m pytest -p no:cacheprovider -m "default_codegen and $(TEST_MARKERS)",\
		LUCID_JAX_TEST_FAST_COMPILE=1 $(BIN)/python -m pytest $(PYTEST_FLAGS) \
			-m "not default_codegen and $(TEST_MARKERS)",\
		make test: the tests marked default_codegen$(,) compiled as XLA's default)

.PHONY: test-notebooks
test-notebooks: $(VENV)/.dev-installed
	rm -rf $(EXECUTED)
	LUCID_JAX_EXECUTED_NOTEBOOKS=$(CURDIR)/$(EXECUTED) $(BIN)/python -m pytest $(PYTEST_FLAGS) \
		-m notebooks tests/test_notebooks.py
	@executed=$$(ls $(EXECUTED)/*.ipynb 2>/dev/null | wc -l); [ "$$executed" = "$(words $(NOTEBOOKS))" ] || \
		{ echo "test-notebooks: $$executed of $(words $(NOTEBOOKS)) notebooks executed (skipped?)"; exit 1; }
	touch $(EXECUTED)/.done

# `make docs` without a `make test-notebooks` since the last change: that first.
$(EXECUTED)/.done: $(NOTEBOOKS) $(SOURCES) | $(VENV)/.dev-installed
	$(MAKE) test-notebooks

# With PyTorch installed: the comparisons with it (marker `torch`: they skip in `make test`;
# the rest of the suite ran there already) and the benchmark scripts end to end (marker
# `benchmarks`, left out of `make test`), PyTorch's candidates included. One run for both: the
# benchmarks' one long quick run keeps a worker while the other takes the rest.
test-peers: $(VENV)/.dev-installed
	$(INSTALL) $(BIN)/python $(TORCH)
	$(BIN)/python -m pytest $(PYTEST_FLAGS) -m "torch or benchmarks"

$(VENV)/.release-installed: pyproject.toml $(VENV)/.dev-installed
	$(INSTALL) $(BIN)/python -e ".[release]"
	touch $@

dist: $(VENV)/.release-installed
	rm -rf dist
	$(UV) build --quiet --out-dir dist .
	$(BIN)/python -m twine check --strict dist/*

# What a Colab runtime has: jax, flax and the notebooks' libraries, not lucid-jax.
COLAB_PACKAGES := jax flax optax matplotlib scikit-learn nbclient nbformat ipykernel

# The notebooks' way in on Colab, in the venv $(1) (holding COLAB_PACKAGES, not lucid-jax):
# the freshly built wheel beside each notebook, and each notebook's first cell (the install
# cell) executed from that folder in a Jupyter kernel, followed by imports of what the
# notebooks use; then the installed version must be the wheel's. (The notebooks themselves run,
# cell by cell with their results checked, once: in `make test-notebooks`.)
define colab_install_cells
	rm -rf build/colab
	mkdir -p build/colab
	cp dist/*.whl build/colab/
	$(1)/bin/python scripts/colab_install_cells.py build/colab notebooks/*.ipynb
	cd build/colab && for notebook in *.ipynb; do \
		../../$(1)/bin/jupyter-execute --timeout=300 "$$notebook" || exit 1; done
	$(1)/bin/python -c "import importlib.metadata as m, glob; \
		wheel = glob.glob('dist/lucid_jax-*.whl')[0]; version = m.version('lucid-jax'); \
		assert f'-{version}-' in wheel, (version, wheel); print('notebooks installed', wheel)"
endef

# The built wheel, on Python 3.12 with the newest JAX: first installed as a Colab notebook
# installs it (colab_install_cells, in a venv with Colab's packages), then with the test
# extras, and tested from the unpacked sdist with its source package removed: what a user
# gets, tested away from the source tree, with the installed package's doctests in the same
# run (`./tests` a path, `lucid_jax` the installed package). (One venv for both: the same
# environment.)
test-wheel: dist
	rm -rf .venv-wheel build/wheel-test
	$(NEW_VENV) $(PYTHON312) --seed .venv-wheel
	$(INSTALL) .venv-wheel/bin/python $(COLAB_PACKAGES)
	$(call colab_install_cells,.venv-wheel)
	$(INSTALL) .venv-wheel/bin/python "$$(ls dist/*.whl)[$(DEV_EXTRAS)]"
	mkdir -p build/wheel-test
	tar -xzf dist/*.tar.gz -C build/wheel-test --strip-components=1
	rm -rf build/wheel-test/lucid_jax
	cd build/wheel-test && ../../.venv-wheel/bin/pytest $(PYTEST_FLAGS) --doctest-modules ./tests \
		--pyargs lucid_jax

# The Colab check alone (`make test-wheel` includes it), in a venv of its own.
test-colab: dist
	rm -rf .venv-colab
	$(NEW_VENV) $(PYTHON312) --seed .venv-colab
	$(INSTALL) .venv-colab/bin/python $(COLAB_PACKAGES)
	$(call colab_install_cells,.venv-colab)

# The suite against the oldest declared jax, jaxlib and numpy, the package installed (not
# editable) and the tests run from tests/ (so that the clone's sources are not imported); the
# Flax tests skip there (no flax). Beside it, in a venv of its own, the Flax tests on the flax
# extra's floor, which needs jax 0.8.1, with the numerics and the docs' examples (both
# XLA:CPUs add rows in sequence: the float64 instance sums of lucid_jax/_cpu_sums.py are what
# these two runs prove). The two environments are made one after the other (two builds of the
# package from one source tree would share its build files); then the two suites run side
# by side, OLDEST_WORKERS xdist workers each, the floor's output kept and shown after: on two
# cores, one worker each took 115-117 s where the two suites one after the other with two
# workers each took 133-151 s (each run's start and end left a core idle).
OLDEST_WORKERS ?= 1
test-oldest: WORKERS = $(OLDEST_WORKERS)
FLAX_FLOOR_TESTS := test_flax_*.py test_numerics.py test_cpu_sums.py test_docs_examples.py

# $(call oldest_venv,VENV,PINS): a new VENV with PINS, the test dependencies and the package
# (not editable), checked consistent.
define oldest_venv
	$(NEW_VENV) $(PYTHON) $(1)
	$(INSTALL) $(1)/bin/python $(2) $(OLDEST_TEST_DEPS)
	$(INSTALL) $(1)/bin/python --no-deps .
	$(UV) pip check --quiet --python $(1)/bin/python
endef

test-oldest: | $(UV)
	rm -rf .venv-oldest .venv-oldest-flax build/test-oldest-flax.log
	mkdir -p build
	$(call oldest_venv,.venv-oldest,$(OLDEST_PINS))
	$(call oldest_venv,.venv-oldest-flax,$(OLDEST_FLAX_PINS))
	cd tests && $(call beside,../build/test-oldest-flax.log,\
		../.venv-oldest-flax/bin/pytest $(PYTEST_FLAGS) $(FLAX_FLOOR_TESTS),\
		../.venv-oldest/bin/pytest $(PYTEST_FLAGS) \
			--ignore=test_notebooks.py --ignore=test_bench_smoke.py,\
		test-oldest: the flax extra's floor ($(OLDEST_FLAX_PINS)))

# The suite (not the notebooks, not the benchmarks) on each Python of PYTHONS this machine
# has, each with the newest JAX pip can give it, in an environment uv makes (uv comes from
# PyPI into .venv; it makes and fills an environment in seconds). uv is told to use the
# interpreters found here and never to download one: a Python absent here is skipped, said so.
PYTHONS ?= 3.11 3.12 3.13 3.14
# Extra pytest arguments for each run of test-pythons (e.g. a subset: `tests/test_numerics.py`).
PYTHONS_PYTEST_ARGS ?=

.PHONY: test-pythons
test-pythons: $(UV)
	@ran=""; skipped=""; for version in $(PYTHONS); do \
		interpreter=$$(for p in python$$version $$HOME/.pyenv/versions/$$version.*/bin/python$$version; \
			do "$$p" -c "" 2>/dev/null && echo "$$p" && break; done); \
		if [ -z "$$interpreter" ]; then \
			echo "test-pythons: no Python $$version on this machine: skipped"; \
			skipped="$$skipped $$version"; continue; fi; \
		env=.venv-py$$version; rm -rf $$env; \
		$(NEW_VENV) "$$interpreter" $$env || exit 1; \
		$(UV) pip install --quiet --python $$env/bin/python -e ".[dev,flax]" || exit 1; \
		$$env/bin/python -c "import sys, jax; print('test-pythons: Python', \
			sys.version.split()[0], 'jax', jax.__version__)"; \
		$$env/bin/python -m pytest $(PYTEST_FLAGS) $(PYTHONS_PYTEST_ARGS) || exit 1; \
		ran="$$ran $$version"; done; \
	echo "test-pythons: passed on Python$$ran; skipped (not installed):$${skipped:- none}"

# The docs site, built strictly (a warning, a broken link or reference fails) into site/, with
# the notebooks as `make test-notebooks` executed them, and MathJax vendored from its npm
# package (the site loads nothing from the network); then scripts/check_site.py checks the HTML.
$(VENV)/.docs-installed: pyproject.toml | $(UV)
	$(INSTALL) $(BIN)/python -e ".[docs]"
	touch $@

docs: $(VENV)/.docs-installed $(EXECUTED)/.done
	$(BIN)/python scripts/vendor_mathjax.py docs/javascripts/mathjax
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
	$(BIN)/python scripts/check_site.py site

# Sync each notebook's .ipynb with its jupytext source notebooks/NN_name.py (edit the .py).
notebooks: $(VENV)/.dev-installed
	$(BIN)/jupytext --sync notebooks/0*.py

bench: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.bench

scaling: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.scaling

accuracy: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.accuracy --out benchmarks/results/accuracy.md

# ruff, then pyright ("standard", configured in pyproject.toml) on the package, then the
# completeness of the public API's types that py.typed promises (scripts/verify_types.py:
# `pyright --verifytypes`, which fails on any unknown type but those Flax's base classes give).
$(VENV)/.lint-installed: pyproject.toml $(VENV)/.dev-installed
	$(INSTALL) $(BIN)/python -e ".[$(DEV_EXTRAS),lint]"
	touch $@

lint: $(VENV)/.lint-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check lucid_jax tests benchmarks notebooks scripts
	$(BIN)/pyright --pythonpath $(BIN)/python --project $(CURDIR)
	$(BIN)/python scripts/verify_types.py $(BIN)/pyright

# The pinned environment with every extra .ci/run's steps use, installed before some of them
# run side by side (then none of them installs into .venv while another reads it).
.PHONY: ci-env
ci-env: $(VENV)/.lint-installed $(VENV)/.docs-installed $(VENV)/.release-installed

format: $(VENV)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format lucid_jax tests benchmarks notebooks scripts

clean:
	rm -rf $(VENV) .venv-wheel .venv-oldest .venv-oldest-flax .venv-colab build dist site .cache .pytest_cache .ruff_cache \
		.hypothesis docs/javascripts/mathjax
