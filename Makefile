# One install target used by both README commands. Idempotent: a stamp file records that the
# venv matches the requirement files, so a second `make install` takes seconds.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
REQS := requirements/torch.txt requirements/constraints.txt requirements/main.txt requirements/nodeps.txt requirements/dev.txt pyproject.toml

.PHONY: install lint test test-unit test-e2e demo bench clean

install: $(STAMP)

$(STAMP): $(REQS)
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	@# torch first and alone: the machine's pip configuration finds the CPU build of this exact
	@# version; everything after runs under a constraint that keeps it.
	$(PIP) install -q --disable-pip-version-check -r requirements/torch.txt
	$(PIP) install -q --disable-pip-version-check -c requirements/constraints.txt -r requirements/main.txt -r requirements/dev.txt
	@# Weight-only packages that pin ancient dependencies.
	$(PIP) install -q --disable-pip-version-check --no-deps -r requirements/nodeps.txt
	$(PIP) install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	$(PY) -m recsys.compat
	@touch $(STAMP)

# Ruff (lint rules and formatting) over the tree, mypy over recsys/, training/ and serving/
# (settings in pyproject.toml). `make test`, which CI runs, lints first.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install lint
	$(VENV)/bin/pytest

test-unit: install
	$(VENV)/bin/pytest -m unit

test-e2e: install
	$(VENV)/bin/pytest -m e2e

demo: install
	$(VENV)/bin/recsys demo --out runs/demo

bench: install
	$(PY) benchmarks/encode_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
