# Two entry points for a fresh machine (Python 3.11): `make repro` runs the offline default
# pipeline, `make test` runs the lint and the tests. Both create .venv first: repro from
# requirements.txt (runtime), test from requirements-dev.txt (runtime + pytest, ruff, matplotlib).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup setup-dev repro verify test lint bench
setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

repro: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" dvc repro

# after `make repro`: what this machine regenerated against what is committed (scripts/verify.py)
verify: setup
	$(PY) -m scripts.verify

lint: setup-dev
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

bench: setup-dev
	$(PY) -m benchmarks.encoding_speed
	$(PY) -m benchmarks.translation_speed
	$(PY) -m benchmarks.training_speed
