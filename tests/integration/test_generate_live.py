"""Live smoke tests against a real endpoint; they run only when one is configured:

- ``MSM_LIVE_OPENAI_BASE_URL`` (+ ``MSM_LIVE_OPENAI_MODEL``, key in ``OPENAI_API_KEY`` if needed),
  e.g. a `vllm serve` on a GPU node;
- ``ANTHROPIC_API_KEY`` (+ optional ``MSM_LIVE_ANTHROPIC_MODEL``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.launch import REPO, run_env
from tests.helpers.llm_fixtures import write_prompts


def complete(tmp_path, *backend_args):
    write_prompts(tmp_path / "p.jsonl", 2)
    done = subprocess.run([sys.executable, "-m", "msm_megatron.cli", "generate", "complete",
                           str(tmp_path / "p.jsonl"), str(tmp_path / "out"), "--max-tokens",
                           "64", "--quiet", *backend_args], cwd=REPO, env=run_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").open()]
    assert len(rows) == 2 and all(r["text"].strip() for r in rows)


@pytest.mark.skipif(not os.environ.get("MSM_LIVE_OPENAI_BASE_URL"),
                    reason="no live OpenAI-compatible endpoint configured")
def test_live_openai_compatible(tmp_path):
    complete(tmp_path, "--base-url", os.environ["MSM_LIVE_OPENAI_BASE_URL"], "--model",
             os.environ.get("MSM_LIVE_OPENAI_MODEL", "default"))


@pytest.mark.skipif(not os.environ.get("ANTHROPIC_API_KEY"), reason="no ANTHROPIC_API_KEY")
def test_live_anthropic(tmp_path):
    complete(tmp_path, "--backend", "anthropic", "--model",
             os.environ.get("MSM_LIVE_ANTHROPIC_MODEL", "claude-haiku-4-5"))


def test_vllm_offline_backend_without_vllm_is_a_clear_error(tmp_path):
    pytest.importorskip("transformers")  # any dev install
    if __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    done = subprocess.run([sys.executable, "-m", "msm_megatron.cli", "generate", "docs",
                           str(REPO / "examples" / "spec" / "qwen_spec.txt"), "backend.kind=vllm",
                           "backend.model=/models/x", f"out_dir={tmp_path / 'o'}"], cwd=REPO,
                          env=run_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "needs vLLM in this environment" in done.stderr
    assert not (tmp_path / "o").exists()
