# Two commands matter: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test lint docs screenshots bench clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (found %s); set PYTHON=python3.11" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m infra install-kafka --skip-missing
	@touch $@

demo: $(VENV)/.installed
	$(PY) -m infra demo

# Two workers, a test file each at a time: most of the suite waits on real servers, not on the CPU.
# The whole suite on Apache Kafka (Tansu where Java 17+ or its jars are missing: the run's header says
# which), then, on Tansu, the memory-only fallback, the tests whose outcome depends on the broker itself:
# the journey end to end, and the broker wiped or restarted under the relay. (Consumers' handling of
# duplicates, gaps, poison and forgeries, and the relay's own logic, do not depend on the broker: the
# first pass covers them.)
TANSU_TESTS := tests/e2e/test_journey_flow.py \
	$(addprefix tests/faults/test_,broker_restarted_empty.py relay_backoff.py)
test: lint
	$(PY) -m infra install-browser
	$(PY) -m pytest -n 2 --dist loadfile
	@if $(PY) -c 'import sys; from infra import kafka; sys.exit(0 if kafka.available() else 1)'; then \
		echo "The broker-facing tests again, on Tansu:"; \
		UCART_BROKER=tansu $(PY) -m pytest -n 2 --dist loadfile $(TANSU_TESTS); \
	else \
		echo "Apache Kafka cannot run here (Java 17+ and \`python -m infra install-kafka\`): the suite ran on Tansu only."; \
	fi

# The gates: zero findings, or the tests don't run (configuration in pyproject.toml).
lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

docs: $(VENV)/.installed
	$(PY) -m infra docs

# The dashboard's pages as the demo cohort shows them, into docs/img/ (the README shows them).
screenshots: $(VENV)/.installed
	$(PY) -m infra install-browser
	UCART_SCREENSHOTS=docs/img $(PY) -m pytest -m screenshots tests/services/followup/dashboard/test_screenshots.py

# Performance (docs/performance.md): its own servers on free ports; every figure beside its raw baseline,
# written to bench/results/. `make bench BENCH_ARGS=--quick` runs every workload at small sizes.
bench: $(VENV)/.installed
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .ucart .pytest_cache
