# Verbs for people and CI. `make setup test` is the README's test command and what .ci/run runs.
VENV := .venv
PY := $(VENV)/bin/python
export VLLM_CPU_KVCACHE_SPACE ?= 1
export VLLM_TARGET_DEVICE ?= cpu
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test test-fast lint serve bench demo-checkpoint clean images images-gpu stack-up stack-down

setup: $(VENV)/.installed
	@scripts/ensure-redis.sh
	@scripts/ensure-containers.sh

$(VENV)/.installed: pyproject.toml scripts/setup.sh scripts/install-helm.sh scripts/lmms-eval-env.sh scripts/lmms-eval-requirements.txt
	scripts/setup.sh
	@touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint docker/Dockerfile

# The deploy tests (marker `deploy`) build the CPU images and run docker/compose.yaml's stack themselves.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint docker/Dockerfile
	$(PY) -m pytest -q -ra --durations=25

test-fast: setup
	$(PY) -m pytest -q -ra -m "not parity and not engine and not slow and not deploy"

# Images (docker/Dockerfile; podman where no docker daemon answers): gateway, engine-cpu (+ a local redis image
# when the base is built here). GPU images: `make images-gpu` (several GB of CUDA wheels).
images: setup
	scripts/images.sh

images-gpu: setup
	IMAGES="engine train" scripts/images.sh

# docker/compose.yaml: redis, one engine-cpu, gateways on :8001 and :8002. Returns when ready / gone.
stack-up: setup
	scripts/stack.sh up

stack-down:
	scripts/stack.sh down

serve: setup
	$(VENV)/bin/videoqa serve

bench: setup
	$(PY) benchmarks/run_all.py

# Rebuild the embedded demo checkpoint from scratch (~1 h on 2 CPU cores) and its held-out evaluations (simple and
# default world).
demo-checkpoint: setup
	$(VENV)/bin/videoqa synth demo --videos 1000 --seed 1 --preset simple --out data/demo
	$(VENV)/bin/videoqa train configs/demo.yaml
	rm -rf videoqa/assets/demo_checkpoint && mkdir -p videoqa/assets
	cp -r runs/demo/final videoqa/assets/demo_checkpoint
	$(VENV)/bin/videoqa synth demo --videos 100 --seed 2 --preset simple --out data/heldout
	$(VENV)/bin/videoqa eval --model demo --data data/heldout --json docs/demo_eval/eval.json
	$(VENV)/bin/videoqa synth demo --videos 24 --seed 7 --out data/heldout_dynamic
	$(VENV)/bin/videoqa eval --model demo --data data/heldout_dynamic --json docs/demo_eval/eval_dynamic.json
	cp runs/demo/loss.png docs/demo_eval/loss.png

clean:
	rm -rf $(VENV) .venv-lmms .pytest_cache build *.egg-info
