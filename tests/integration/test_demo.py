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


def test_demo_generates_its_data_when_an_endpoint_is_configured(tmp_path):
    from tests.integration.llm_fixtures import llm_server

    out = tmp_path / "demo"
    with llm_server("--fault-rate", "0.1", "--faults", "429,500") as url:
        done = subprocess.run([sys.executable, "-m", "msm_megatron.cli", "demo", "--out",
                               str(out), "train.steps=2", "--llm-base-url", f"{url}/v1",
                               "--llm-model", "fake"], cwd=REPO, env=run_env(),
                              capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    generated = out / "gen" / "docs" / "dataset.jsonl"
    stats = json.loads((out / "data" / "corpus.stats.json").read_text())
    assert str(generated) in json.dumps(stats)  # the corpus trained on is the generated one
    assert "generated documents" in done.stdout and "generated AFT chats" in done.stdout
