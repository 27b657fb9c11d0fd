"""The fault matrix on a real two-node Slurm cluster (localhost, see conftest.py).

Studies run as users run them, ``msm pipeline exp.yaml --executor slurm --wait``, on the
cluster's non-default partition, without ``kill_invalid_depend``. Each study's midtraining job
is held at named points (``MSM_FAULT_HOLD``, see ``msm_megatron.faults``) where the test
delivers a real signal the way Slurm does, then lets it go on:

- one node, one rank, synchronous saves: USR1 through the batch script before the first save
  (``scancel -b``), right after a save; SIGTERM to the job step (what ``scancel`` and the time
  limit send) while shards are written; USR1 through the batch script during the final save;
- two nodes, TP=2 across them, asynchronous saves: USR1 through the batch script before the
  first save, while the asynchronous writer runs and while the final one runs; SIGTERM to every
  process of the job step;
- one node, a real time limit: ``--time=2`` with ``--signal=B:USR1@70``; Slurm itself sends USR1;
- two nodes, DP=2 across them: rank 1 on node2 is SIGKILLed right after the step-10 save; the
  stage fails naming job, node and log, its dependents are cancelled and named, and rerunning
  the same command resumes from the step-10 checkpoint.

Every study ends with the final loss of an uninterrupted run at the same layout (≤ 1e-6; in
fact bit for bit: a TP=2 run and a one-rank run part ways after ~10 steps on this chaotic toy
schedule, so each layout has its own reference) and with its SFT stage
having loaded the midtrained checkpoint and its export written an HF model. The studies run at
the same time (the cluster runs their jobs side by side), which keeps the matrix affordable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.launch import run_env
from tests.slurm.test_pipeline_slurm import metrics, msm

pytestmark = pytest.mark.slow

STEPS = 30
MIDTRAIN = "midtrain/default/s0"


@dataclass
class Study:
    """One experiment, its holds and what the test does at each."""

    name: str
    root: Path
    resources: str
    overrides: list[str]
    # hold point -> scancel arguments (job id appended), or ["from-slurm"]: Slurm signals
    actions: dict[str, list[str]]
    env: dict = field(default_factory=dict)
    slurm: str = "{cluster: local}"
    proc: subprocess.Popen | None = None
    signalled: set = field(default_factory=set)  # hold points the test has signalled

    @property
    def holds(self) -> Path:
        return self.root / "holds"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def experiment(self) -> Path:
        path = self.root / "exp.yaml"
        self.root.mkdir(parents=True, exist_ok=True)
        overrides = ", ".join([f"train.steps={STEPS}", "checkpoint.save_interval=10",
                               "log.interval=1", *self.overrides])
        path.write_text(f"""
name: {self.name}
out_dir: out
midtrain:
  recipe: qwen3_toy_midtrain
  overrides: [{overrides}]
  resources: {self.resources}
sft: {{recipe: qwen3_toy_sft, overrides: [train.steps=2, checkpoint.save_interval=2]}}
aft_sizes: [20]
cot: [no_cot]
seeds: [0]
baseline: false
eval: {{enabled: false}}
slurm: {self.slurm}
""")
        return path

    def start(self) -> None:
        env = run_env({"MSM_FAULT_HOLD": ",".join(self.actions),
                       "MSM_FAULT_HOLD_DIR": str(self.holds), **self.env})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "msm_megatron.cli", "pipeline", str(self.experiment()),
             "--executor", "slurm", "--wait"], cwd=self.root, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def job(self) -> str:
        ledger = json.loads((self.out / "pipeline" / "slurm_jobs.json").read_text())
        return ledger[MIDTRAIN]["job"]

    def run_dir(self) -> Path:
        plan = json.loads((self.out / "pipeline" / "plan.json").read_text())
        return Path(next(s["out"] for s in plan["stages"] if s["name"] == MIDTRAIN))

    def log(self) -> str:
        return "".join(p.read_text(errors="replace")
                       for p in sorted((self.out / "logs").glob("midtrain-*.log")))

    def step(self) -> None:
        """Act on a hold that has been reached: signal as told (or, for ``from-slurm``, let Slurm
        signal), then release it once the signal has reached the held rank."""
        for point, action in self.actions.items():
            held = self.holds / f"{point}.held"
            if not held.exists():
                continue
            if action[0] != "from-slurm" and point not in self.signalled:
                subprocess.run(["scancel", *action, self.job()], check=True)
                self.signalled.add(point)
            if (self.holds / f"{point}.signalled").exists():
                held.unlink()


def drive(studies: list[Study], timeout: float) -> None:
    end = time.monotonic() + timeout
    while any(s.proc.poll() is None for s in studies):
        assert time.monotonic() < end, "studies did not finish: " + ", ".join(
            s.name for s in studies if s.proc.poll() is None)
        for study in studies:
            study.step()
        time.sleep(0.2)


def reference_loss(study: Study, tmp_path: Path) -> float:
    """The study's midtraining config run uninterrupted outside Slurm, at the same layout (the
    same number of local ranks): resumes are compared bit for bit with it."""
    plan = json.loads((study.out / "pipeline" / "plan.json").read_text())
    stage = next(s for s in plan["stages"] if s["name"] == MIDTRAIN)
    run = tmp_path / f"reference-{study.name}"
    nproc = ["--nproc", str(stage["ranks"])] if stage["ranks"] > 1 else []
    done = msm("train", stage["config"], f"train.run_dir={run}", *nproc, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return metrics(run)[STEPS]["loss"]


def assert_completed(study: Study, output: str, ref: float) -> None:
    assert study.proc.returncode == 0, f"{study.name}:\n{output[-4000:]}"
    got = metrics(study.run_dir())
    assert max(got) == STEPS, (study.name, sorted(got))
    assert abs(got[STEPS]["loss"] - ref) <= 1e-6, (study.name, got[STEPS]["loss"], ref)
    exports = list((study.out / "export").glob("*/config.json"))
    assert exports, f"{study.name}: no HF export"


HOW = {("--batch", "--signal=USR1"): "USR1 to the batch script (`scancel -b`)",
       ("--signal=TERM",): "SIGTERM to every process of the job step (`scancel -s TERM`)",
       ("--signal=USR1",): "USR1 to every process of the job step (`scancel -s USR1`)"}
WHERE = {"step": "after step {n} (before any save of it)",
         "after_save": "right after the save of step {n}",
         "during_save": "while step {n}'s shards are written",
         "async_save": "while the asynchronous writer of step {n} runs"}
TABLE_HEAD = """# Fault matrix: preemption and failure on a real Slurm cluster

Generated by `{command}` on {date}, on a 2-core CPU machine (gloo): a real slurmctld and two
slurmd nodes on one host (tests/helpers/local_cluster.sh), partition `h100-long` (not the
default), no
`kill_invalid_depend`; the toy Qwen3 midtraining stage of a study submitted with
`msm pipeline exp.yaml --executor slurm --wait`, {steps} steps, a checkpoint every 10.
"final loss Δ" compares with the same config run uninterrupted at the same layout.

| study | layout | fault: where → how | outcome | final loss Δ |
| --- | --- | --- | --- | --- |
"""


def matrix_rows(study: Study, ref: float, layout: str) -> list[str]:
    """One row per fault of a study, from what its log says happened."""
    log = study.log()
    stops = re.findall(r"stopped by (\w+) at step (\d+)", log)
    delta = abs(metrics(study.run_dir())[STEPS]["loss"] - ref)
    rows = []
    for point, action in study.actions.items():
        kind, n = point.split(":")
        how = ("USR1 from Slurm's own `--signal=B:USR1@70` before `--time=2`"
               if action[0] == "from-slurm" else HOW[tuple(action)])
        if int(n) == STEPS:
            outcome = "completed, exit 0 (the run was done)"
        else:
            sig, at = stops.pop(0)
            outcome = f"stopped by {sig} at step {at}, saved, exit 75, requeued, resumed"
        rows.append(f"| {study.name} | {layout} | {WHERE[kind].format(n=n)} → {how} | "
                    f"{outcome} | {delta:.1e} |")
    return rows


def write_table(rows: list[str]) -> str:
    text = TABLE_HEAD.format(
        command="MSM_FAULT_MATRIX_TABLE=docs/fault-matrix.md .venv/bin/python -m pytest "
                "tests/slurm/test_fault_matrix.py", date=time.strftime("%Y-%m-%d"),
        steps=STEPS) + "\n".join(rows) + "\n"
    target = os.environ.get("MSM_FAULT_MATRIX_TABLE")
    if target:
        Path(target).write_text(text)
    return text


def test_fault_matrix_on_two_nodes(slurm_cluster, tmp_path):
    one_node = "{nodes: 1, tasks_per_node: 1}"
    two_nodes = "{nodes: 2, tasks_per_node: 1}"
    studies = [
        Study("sync-1node", tmp_path / "sync", one_node, [], {
            "step:3": ["--batch", "--signal=USR1"],
            "after_save:10": ["--batch", "--signal=USR1"],
            "during_save:20": ["--signal=TERM"],
            "during_save:30": ["--batch", "--signal=USR1"]}),
        Study("async-tp2-2nodes", tmp_path / "tp2", two_nodes,
              ["parallel.tp=2", "checkpoint.async_save=true"], {
                  "step:3": ["--batch", "--signal=USR1"],
                  "async_save:10": ["--batch", "--signal=USR1"],
                  "step:25": ["--signal=TERM"],
                  "async_save:30": ["--batch", "--signal=USR1"]}),
        Study("time-limit", tmp_path / "limit", "{nodes: 1, tasks_per_node: 1, time: '00:02:00'}",
              [], {"step:5": ["from-slurm"]},
              slurm="{cluster: local, signal_seconds: 70}"),
        Study("dp2-2nodes-rank-killed", tmp_path / "dp2", two_nodes, [], {},
              env={"MSM_FAULT_KILL": "after_save:10@rank1", "MSM_SRUN_WAIT": "10"}),
    ]
    for study in studies:
        study.start()
    drive(studies, timeout=1500)
    outputs = {s.name: s.proc.stdout.read() for s in studies}
    refs = {s.name: reference_loss(s, tmp_path) for s in studies if s.name != "time-limit"}
    refs["time-limit"] = refs["sync-1node"]  # the same config, one rank

    # preempted at every point, requeued each time, and ended where the reference ends
    for study, restarts in zip(studies[:3], (3, 3, 1), strict=True):
        assert_completed(study, outputs[study.name], refs[study.name])
        log = study.log()
        assert f"(restart {restarts})" in log, log[-3000:]
        if study.name != "time-limit":  # a slow machine may see the time limit's USR1 twice
            assert f"(restart {restarts + 1})" not in log, log[-3000:]
            assert log.count("requeueing job") == restarts, log[-3000:]
        assert "BrokenPipeError" not in log
    assert "stopped by SIGTERM at step 20" in studies[0].log()
    assert "stopped by SIGTERM at step 25" in studies[1].log()
    assert "stopped by SIGUSR1 at step 5" in studies[2].log()
    assert "asking the ranks to checkpoint" in studies[2].log()  # Slurm's USR1 reached the script

    # the killed rank fails its stage; the dependents are cancelled and named
    killed = studies[3]
    out = outputs[killed.name]
    assert killed.proc.returncode != 0
    assert f"{MIDTRAIN}: job {killed.job()} FAILED" in out, out[-3000:]
    assert "failed tasks: node2 task 1: Killed" in out, out[-3000:]
    assert "logs/midtrain-default-s0-" in out
    for name in ("sft/msm-default-no_cot-n20-s0", "export/msm-default-no_cot-n20-s0"):
        assert f"{name}: job" in out, out[-3000:]
        assert f"CANCELLED because {MIDTRAIN} failed" in out.split(f"{name}: job")[1][:80], out
    # rerunning the same command resumes from the last complete checkpoint
    again = subprocess.run(
        [sys.executable, "-m", "msm_megatron.cli", "pipeline", str(killed.root / "exp.yaml"),
         "--executor", "slurm", "--wait"], cwd=killed.root, env=run_env(),
        capture_output=True, text=True, timeout=900)
    killed.proc.returncode = again.returncode
    assert_completed(killed, again.stdout + again.stderr, refs[killed.name])
    assert "resuming at step 10" in killed.log()

    layouts = ["1 node × 1 rank, sync saves", "2 nodes × 1 rank, TP=2, async saves",
               "1 node × 1 rank, sync saves"]
    rows = [row for study, layout in zip(studies[:3], layouts, strict=True)
            for row in matrix_rows(study, refs[study.name], layout)]
    delta = abs(metrics(killed.run_dir())[STEPS]["loss"] - refs[killed.name])
    rows.append(f"| {killed.name} | 2 nodes × 1 rank, DP=2, sync saves | rank 1 on node2 "
                "SIGKILLed right after the save of step 10 | stage FAILED naming the job, "
                "`node2 task 1: Killed` and the log; SFT and export CANCELLED and named; the "
                f"same command again resumed at step 10 and completed | {delta:.1e} |")
    print(write_table(rows))
