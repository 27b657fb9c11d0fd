"""The README's main command, `msm demo` (the whole pipeline), end to end on a short schedule."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.launch import REPO, run_env


def demo(out, *extra, timeout=900):
    return subprocess.run([sys.executable, "-m", "msm_megatron.cli", "demo", "--out", str(out),
                           *extra], cwd=REPO, env=run_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_demo_runs_the_pipeline_and_reports_without_a_judge(tmp_path):
    out = tmp_path / "demo"
    done = demo(out, "train.steps=4")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    latest = out / "latest"
    arms = sorted(p.name for p in latest.glob("export-*"))
    assert arms == ["export-base-default-no_cot-n20-s0", "export-base-default-no_cot-nall-s0",
                    "export-msm-default-no_cot-n20-s0", "export-msm-default-no_cot-nall-s0"]
    for arm in arms:
        assert json.loads((latest / arm / "config.json").read_text())["model_type"] == "qwen3"
        assert (latest / arm / "tokenizer.json").exists()
    assert "greedy tokens match" in done.stdout and (out / "loss.png").exists()
    eval_dir = (latest / "report").resolve()  # the report is written into the eval directory
    assert eval_dir == (latest / "eval").resolve()
    text = (eval_dir / "report.md").read_text()
    assert "Mechanical checks only — no judge was configured" in text
    # without a clone: the builtin scenarios, and both the report and the console say so
    assert "Scenarios: **builtin**" in text and "[demo] eval scenarios: builtin" in done.stdout
    assert "## Data efficiency" in text and (eval_dir / "data_efficiency.png").exists()
    # progress is visible: the training progress bars reach the console
    assert "qwen3_toy_midtrain:" in done.stdout and "step/s" in done.stdout
    # a rerun does nothing
    again = demo(out, "train.steps=4")
    assert again.returncode == 0 and "0 job(s) to run" in again.stdout


def test_demo_generates_its_data_and_judges_with_an_endpoint(tmp_path):
    from tests.helpers.llm_fixtures import llm_server

    out = tmp_path / "demo"
    with llm_server("--fault-rate", "0.1", "--faults", "429,500") as url:
        done = demo(out, "train.steps=2", "--llm-base-url", f"{url}/v1", "--llm-model", "fake")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    corpus = (out / "latest" / "prepare_corpus-default").resolve()
    stats = json.loads((corpus / "corpus.stats.json").read_text())
    generated = (out / "latest" / "generate_docs-default").resolve() / "dataset.jsonl"
    assert str(generated) in json.dumps(stats)  # the corpus trained on is the generated one
    summary = json.loads(((out / "latest" / "eval").resolve() / "summary.json").read_text())
    assert summary["headline"] == "classifier"
