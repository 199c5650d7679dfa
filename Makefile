# Two entry points for a fresh machine (Python 3.11): `make repro` runs the offline default
# pipeline, `make test` runs the lint and the tests. Both create .venv first: repro from
# requirements.txt (runtime), test from requirements-dev.txt (runtime + pytest, ruff, matplotlib).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

# The install stamps are named by the sha256 of the requirements' content, not compared by date: a
# fresh clone (files newer than the stamps) keeps its .venv, and only a changed pin reinstalls.
sha256 = $(shell cat $(1) | { sha256sum 2>/dev/null || shasum -a 256; } | cut -c1-16)
STAMP := $(VENV)/.installed.$(call sha256,requirements.txt)
DEV_STAMP := $(VENV)/.installed-dev.$(call sha256,requirements.txt requirements-dev.txt)

.PHONY: setup setup-dev repro verify test test-fast lint bench
setup: $(STAMP)
setup-dev: $(DEV_STAMP)

$(STAMP):
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed $(VENV)/.installed.*
	touch $@

$(DEV_STAMP): | $(STAMP)
	$(PY) -m pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-dev $(VENV)/.installed-dev.*
	touch $@

repro: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" dvc repro

# after `make repro`: what this machine regenerated against what is committed (scripts/verify.py)
verify: setup
	$(PY) -m scripts.verify

lint: setup-dev
	$(VENV)/bin/ruff check .

# two pytest-xdist workers: most tests keep one core busy, so two cores finish the suite ~1.7x sooner
# (metrics/test_suite.json, python -m benchmarks.test_suite)
PYTEST := $(PY) -m pytest -q -n 2
test: lint
	$(PYTEST)

# the tests without the real-process ones marked slow (pyproject.toml): under a minute
test-fast: lint
	$(PYTEST) -m "not slow"

bench: setup-dev
	$(PY) -m benchmarks.encoding_speed
	$(PY) -m benchmarks.translation_speed
	$(PY) -m benchmarks.training_speed
