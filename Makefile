# The two commands: `make demo` (live demo of a sample call) and `make test` (the test suite).
# Both create ./.venv on first use (scripts/bootstrap.sh).
VENV ?= .venv
export PYANNOTE_METRICS_ENABLED := 0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test check lint setup bench cluster-demo

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(VENV)/bin/callsense demo

# ruff, its formatting, mypy (strict) and the import layers
lint: setup
	$(VENV)/bin/ruff check callsense tests scripts
	$(VENV)/bin/ruff format --check callsense tests scripts
	$(VENV)/bin/mypy callsense
	$(VENV)/bin/lint-imports

# the fast loop (under two minutes once set up): lint, and the tests that load no model
check: lint
	$(VENV)/bin/python -m pytest -q -ra -m "not slow"

# what CI runs: the same checks, the models' presence, then every test (the slowest are listed at the end).
# Two pytest processes (pytest-xdist), a test module each at a time, the longest modules first
# (tests/conftest.py): a single process keeps one of two cores idle most of the time.
# TEST_WORKERS=1 runs one process.
TEST_WORKERS ?= 2
PARALLEL = $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder,)
test: lint
	$(VENV)/bin/callsense models check
	$(VENV)/bin/python -m pytest -q -ra $(PARALLEL) --durations=25

# Redis (Debian's redis-server), one gateway and two workers on this machine, two calls at once
cluster-demo: setup
	$(VENV)/bin/callsense cluster-demo

bench: setup
	$(VENV)/bin/callsense bench --quick
