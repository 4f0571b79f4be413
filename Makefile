# Verbs for people and CI. `make setup test` is the README's test command and what .ci/run runs.
VENV := .venv
PY := $(VENV)/bin/python
export VLLM_CPU_KVCACHE_SPACE ?= 1
export VLLM_TARGET_DEVICE ?= cpu
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test test-fast lint serve bench demo clean

setup: $(VENV)/.installed
	@scripts/ensure-redis.sh

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	scripts/setup.sh
	@touch $@

lint: setup
	$(VENV)/bin/ruff check .

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -ra

test-fast: setup
	$(PY) -m pytest -q -ra -m "not parity and not engine and not slow"

serve: setup
	$(VENV)/bin/videoqa serve

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
