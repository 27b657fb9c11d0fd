"""``msm pipeline --executor slurm`` on a real Slurm cluster (localhost, see conftest.py).

The toy experiment goes through sbatch: jobs chained with ``afterok`` dependencies, the eval
as a job array. Mid-run the training job gets USR1 (what ``--signal=B:USR1@T`` delivers before
a time limit): it checkpoints, requeues itself, resumes and ends with the same loss as an
uninterrupted run; a rerun submits nothing. A stage that fails cancels its dependents, names
its job and log, and leaves completed stages done.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.launch import REPO, run_env
from tests.helpers.llm_fixtures import llm_server

pytestmark = pytest.mark.slow

MIDTRAIN_STEPS = 30


def experiment(path: Path, out: Path, judge_url: str, aft_size: int = 20) -> Path:
    path.write_text(f"""
name: slurm_toy
out_dir: {out}
midtrain:
  recipe: qwen3_toy_midtrain
  overrides: [train.steps={MIDTRAIN_STEPS}, checkpoint.save_interval=10, log.interval=1]
sft: {{recipe: qwen3_toy_sft, overrides: [train.steps=3, checkpoint.save_interval=3]}}
aft_sizes: [{aft_size}]
cot: [no_cot]
seeds: [0]
baseline: true
eval:
  overrides: [preset=quick, samples=1, max_new_tokens=8, runner=hf,
              "judge.base_url={judge_url}/v1", judge.model=judge]
slurm: {{cluster: local}}
""")
    return path


def msm(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "msm_megatron.cli", *args], cwd=REPO,
                          env=run_env(), capture_output=True, text=True, **kwargs)


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def metrics(run_dir: Path) -> dict[int, dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in row:
            rows[row["step"]] = row
    return rows


def test_pipeline_on_slurm_with_preemption_and_rerun(slurm_cluster, tmp_path):
    with llm_server() as judge:
        exp = experiment(tmp_path / "exp.yaml", tmp_path / "out", judge)
        run = subprocess.Popen(
            [sys.executable, "-m", "msm_megatron.cli", "pipeline", str(exp), "--executor",
             "slurm", "--wait"], cwd=REPO, env=run_env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        ledger_path = tmp_path / "out" / "pipeline" / "slurm_jobs.json"
        ledger = wait_for(lambda: ledger_path.exists() and json.loads(ledger_path.read_text())
                          .get("report"), 120, "all stages submitted")
        ledger = json.loads(ledger_path.read_text())
        plan = json.loads((tmp_path / "out" / "pipeline" / "plan.json").read_text())
        stages = {s["name"]: s for s in plan["stages"]}
        run_dir = Path(stages["midtrain/default/s0"]["out"])
        # preempt the training job once it is a few steps in (before its step-10 checkpoint)
        wait_for(lambda: len(metrics(run_dir)) >= 3, 300, "training to start")
        job = ledger["midtrain/default/s0"]["job"]
        subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True)
        out, _ = run.communicate(timeout=900)
    assert run.returncode == 0, out[-4000:]

    # dependencies: every stage after the first waited on its inputs' jobs
    assert all(f"{name}: submitted job" in out for name in stages)
    # the eval ran as an array of two tasks (one per arm), each with its own log
    eval_logs = sorted(p.name for p in (tmp_path / "out" / "logs").glob("eval-*.log"))
    assert len(eval_logs) == 2 and all("_" in name for name in eval_logs), eval_logs
    # the training job saved, requeued itself and resumed from the checkpoint it wrote
    log = next((tmp_path / "out" / "logs").glob("midtrain-default-s0-*.log")).read_text()
    assert "requeueing job" in log and "(restart 1)" in log, log[-3000:]
    assert "stopped by SIGUSR1" in log and "resuming at step " in log.split("(restart 1)")[1]
    resumed_at = int(log.split("(restart 1)")[1].split("resuming at step ")[1].split()[0])
    assert 0 < resumed_at < MIDTRAIN_STEPS
    # ... and ends where an uninterrupted run of the same stage ends
    reference = tmp_path / "reference"
    ref_plan = _plan_copy(tmp_path / "out" / "pipeline" / "plan.json", reference)
    for name in ("tokenizer", "prepare_corpus/default", "midtrain/default/s0"):
        done = msm("pipeline-stage", str(ref_plan), name, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ref_run = Path(next(s["out"] for s in json.loads(ref_plan.read_text())["stages"]
                        if s["name"] == "midtrain/default/s0"))
    assert ref_run != run_dir
    got, want = metrics(run_dir), metrics(ref_run)
    assert max(got) == max(want) == MIDTRAIN_STEPS
    assert abs(got[MIDTRAIN_STEPS]["loss"] - want[MIDTRAIN_STEPS]["loss"]) <= 1e-6
    # the report covers both arms
    summary = next((tmp_path / "out" / "eval").glob("*/summary.json"))
    assert len(json.loads(summary.read_text())["arms"]) == 2

    # a rerun submits nothing
    before = ledger_path.read_text()
    again = msm("pipeline", str(exp), "--executor", "slurm", timeout=120)
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout
    assert "submitted job" not in again.stdout and ledger_path.read_text() == before


def _plan_copy(plan_path: Path, root: Path) -> Path:
    """The same plan with every output under ``root`` (an independent, uninterrupted run)."""
    plan = json.loads(plan_path.read_text())
    old_root = plan["out_dir"]
    text = json.dumps(plan).replace(old_root, str(root))
    new = json.loads(text)
    for stage in new["stages"]:  # the training config files were written under the old root
        if stage["kind"] in ("midtrain", "sft"):
            src = Path(stage["argv"][1].replace(str(root), old_root))
            dst = Path(stage["argv"][1])
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(src.read_text().replace(old_root, str(root)))
    out = root / "pipeline" / "plan.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(new))
    return out


def test_failed_stage_cancels_dependents_and_keeps_the_rest(slurm_cluster, tmp_path):
    """AFT size 1000 > the 40 example chats: prepare_sft fails; SFT, export, eval and report
    are cancelled (kill_invalid_depend), the output names the job and its log, and the stages
    that succeeded stay done for the rerun."""
    with llm_server() as judge:
        exp = experiment(tmp_path / "exp.yaml", tmp_path / "out", judge, aft_size=1000)
        done = msm("pipeline", str(exp), "--executor", "slurm", "--wait",
                   "midtrain.overrides=[train.steps=2]", timeout=900)
    assert done.returncode == 1
    err = done.stderr
    assert "prepare_sft/default/no_cot/n1000: job" in err and "FAILED" in err, err
    assert "logs/prepare_sft-default-no_cot-n1000-" in err
    log = next((tmp_path / "out" / "logs").glob("prepare_sft-*.log")).read_text()
    assert "asks for 1000 chats" in log
    for name in ("sft/msm-default-no_cot-n1000-s0", "eval", "report"):
        assert f"{name}: job" in err and "CANCELLED" in err.split(f"{name}: job")[1][:40], err
    markers = {p.stem for p in (tmp_path / "out" / "markers").glob("*.json")}
    assert {"tokenizer", "prepare_corpus-default", "midtrain-default-s0"} <= markers
    assert not any(m.startswith(("sft", "export", "eval", "report")) for m in markers)
