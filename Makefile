# Two commands matter: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test lint docs clean

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
test: lint
	$(PY) -m pytest -n 2 --dist loadfile

# The gates: zero findings, or the tests don't run (configuration in pyproject.toml).
lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

docs: $(VENV)/.installed
	$(PY) -m infra docs

clean:
	rm -rf $(VENV) .ucart .pytest_cache
