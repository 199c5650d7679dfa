# Two entry points for a fresh machine (Python 3.11): `make repro` runs the offline default
# pipeline, `make test` runs the tests. Both create .venv from requirements.txt first.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup repro test bench
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

repro: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" dvc repro

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/encoding_speed.py
	$(PY) benchmarks/translation_speed.py
