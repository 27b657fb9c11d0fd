"""The README's main command, `msm demo`, end to end on a short schedule (one process)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.distributed.launch import REPO, run_env


def test_demo_runs_every_stage_and_exports_a_checked_hf_model(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "msm_megatron.cli", "demo", "--out", str(out),
                           "train.steps=4"], cwd=REPO, env=run_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    hf = out / "sft" / "hf" / "iter_0000004"
    assert json.loads((hf / "config.json").read_text())["model_type"] == "qwen3"
    assert (hf / "model.safetensors").exists() and (hf / "tokenizer.json").exists()
    assert (out / "loss.png").exists()
    assert "greedy tokens match" in done.stdout
