"""``msm pipeline --executor slurm`` on a real Slurm cluster (localhost, see conftest.py): two
nodes, the jobs on the non-default partition ``h100-long`` named by the cluster file, the CPU
stages on the ``cpu`` partition their resources ask for, and no ``kill_invalid_depend``.

The toy experiment goes through sbatch: jobs chained with ``afterok`` dependencies, the eval
as a job array. It is submitted without ``--wait``; a second ``--wait`` submits nothing and
follows the first submission's jobs to the end. Mid-run ``--status`` shows each stage, and the
training job gets USR1 (what ``--signal=B:USR1@T`` delivers before a time limit): it
checkpoints, requeues itself, resumes and ends with the same loss as an uninterrupted run; a
rerun submits nothing. A stage that fails names its job, node and log; its dependents are
cancelled by ``--kill-on-invalid-dep`` and named; completed stages stay done.
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
from tests.slurm.conftest import CPU_PARTITION, PARTITION

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
cpu_stages: {{resources: {{partition: {CPU_PARTITION}}}}}
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


def scontrol_job(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                         text=True, check=True).stdout.splitlines()[0]
    return dict(word.split("=", 1) for word in out.split() if "=" in word)


def status_rows(exp: Path, *overrides: str) -> tuple[int, dict[str, list[str]]]:
    """``msm pipeline --status``: (exit code, stage -> [state, job, nodes, ...])."""
    done = msm("pipeline", str(exp), *overrides, "--status", timeout=120)
    rows = {}
    for line in done.stdout.splitlines()[1:]:
        if not line.strip():
            break
        name, rest = line.split(None, 1)
        state = "not submitted" if rest.startswith("not submitted") else rest.split()[0]
        rows[name] = [state, *rest[len(state):].split()]
    return done.returncode, rows


def test_pipeline_on_slurm_with_preemption_and_rerun(slurm_cluster, tmp_path):
    with llm_server() as judge:
        exp = experiment(tmp_path / "exp.yaml", tmp_path / "out", judge)
        first = msm("pipeline", str(exp), "--executor", "slurm", timeout=300)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        ledger_path = tmp_path / "out" / "pipeline" / "slurm_jobs.json"
        ledger = json.loads(ledger_path.read_text())
        plan = json.loads((tmp_path / "out" / "pipeline" / "plan.json").read_text())
        stages = {s["name"]: s for s in plan["stages"]}
        assert set(ledger) == set(stages)
        # the cluster file's partition for the GPU-side stages, the CPU stages' own for them
        assert scontrol_job(ledger["midtrain/default/s0"]["job"])["Partition"] == PARTITION
        assert scontrol_job(ledger["eval"]["job"])["Partition"] == PARTITION
        for name in ("tokenizer", "prepare_corpus/default", "report"):
            assert scontrol_job(ledger[name]["job"])["Partition"] == CPU_PARTITION, name
        # --wait after a submission without it: nothing new, it follows the queued jobs
        run = subprocess.Popen(
            [sys.executable, "-m", "msm_megatron.cli", "pipeline", str(exp), "--executor",
             "slurm", "--wait"], cwd=REPO, env=run_env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        run_dir = Path(stages["midtrain/default/s0"]["out"])
        # preempt the training job once it is a few steps in (before its step-10 checkpoint)
        wait_for(lambda: len(metrics(run_dir)) >= 3, 300, "training to start")
        code, rows = status_rows(exp)
        job = ledger["midtrain/default/s0"]["job"]
        subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True)
        out, _ = run.communicate(timeout=900)
    assert run.returncode == 0, out[-4000:]
    # mid-run status: one row per stage, from the markers, the ledger and scontrol
    assert code == 0 and set(rows) == set(stages), rows
    assert rows["tokenizer"][:2] == ["done", ledger["tokenizer"]["job"]], rows
    midtrain = rows["midtrain/default/s0"]
    assert midtrain[:2] == ["running", job] and midtrain[2] in ("node1", "node2"), midtrain
    assert "step" in " ".join(midtrain[4:]), midtrain  # the log's last line: a training step
    assert rows["eval"][:2] == ["pending", ledger["eval"]["job"]], rows
    assert "waiting: Dependency" in " ".join(rows["report"]), rows

    # the second command submitted nothing and waited for the first one's jobs
    assert "submitted job" not in out and "nothing new to submit" in out, out[-3000:]
    late = [name for name in stages if name.startswith(("midtrain", "sft", "export", "eval",
                                                            "report"))]
    assert all(f"{name}: job {ledger[name]['job']} completed" in out for name in late), out
    assert "every stage is done" in out
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

    # a rerun submits nothing; --status says every stage is done
    before = ledger_path.read_text()
    again = msm("pipeline", str(exp), "--executor", "slurm", "--wait", timeout=120)
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout
    assert "submitted job" not in again.stdout and ledger_path.read_text() == before
    code, rows = status_rows(exp)
    assert code == 0 and all(row[0] == "done" for row in rows.values()), rows


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
    are cancelled by the jobs' own --kill-on-invalid-dep (the cluster does not cancel them),
    the output names the failed job, its node and its log and each cancelled stage, and the
    stages that succeeded stay done for the rerun."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                            check=True).stdout
    assert "kill_invalid_depend" not in config  # as on a stock cluster
    with llm_server() as judge:
        exp = experiment(tmp_path / "exp.yaml", tmp_path / "out", judge, aft_size=1000)
        done = msm("pipeline", str(exp), "--executor", "slurm", "--wait",
                   "midtrain.overrides=[train.steps=2]", timeout=900)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    err = done.stderr
    failed = "prepare_sft/default/no_cot/n1000"
    ledger = json.loads((tmp_path / "out" / "pipeline" / "slurm_jobs.json").read_text())
    line = next(ln for ln in err.splitlines() if ln.startswith(f"[pipeline] {failed}: job"))
    assert f"job {ledger[failed]['job']} FAILED (exit 1) on node" in line, err
    assert "logs/prepare_sft-default-no_cot-n1000-" in line, err
    assert "asks for 1000 chats" in err  # the log's last line, quoted
    log = next((tmp_path / "out" / "logs").glob("prepare_sft-*.log")).read_text()
    assert "asks for 1000 chats" in log
    for name in ("sft/msm-default-no_cot-n1000-s0", "sft/base-default-no_cot-n1000-s0",
                 "export/msm-default-no_cot-n1000-s0", "eval", "report"):
        assert (f"[pipeline] {name}: job {ledger[name]['job']} CANCELLED because {failed} "
                "failed") in err, err
    assert "every stage is done" not in done.stdout
    markers = {p.stem for p in (tmp_path / "out" / "markers").glob("*.json")}
    assert {"tokenizer", "prepare_corpus-default", "midtrain-default-s0"} <= markers
    assert not any(m.startswith(("sft", "export", "eval", "report")) for m in markers)
    code, rows = status_rows(exp, "midtrain.overrides=[train.steps=2]")
    assert code == 1 and rows[failed][:2] == ["failed", ledger[failed]["job"]], rows
    assert rows["eval"][0] == "cancelled" and f"because {failed} failed" in " ".join(
        rows["eval"]), rows
    assert rows["midtrain/default/s0"][0] == "done", rows
