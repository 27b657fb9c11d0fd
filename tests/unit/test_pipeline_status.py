"""What ``msm pipeline --status`` and ``--wait`` say about a study's jobs, and the sbatch line of
a stage with its own partition, options and environment — Slurm itself faked by records in
``scontrol show job -o`` form (the real cluster runs in tests/slurm/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msm_megatron.config import ConfigError, load_config
from msm_megatron.pipeline import slurm, status
from msm_megatron.pipeline.experiment import ExperimentConfig
from msm_megatron.pipeline.markers import write_marker
from msm_megatron.pipeline.plan import Plan, Stage
from msm_megatron.pipeline.slurm_jobs import JobTask, parse_fields, task_from_fields

LINE = ("JobId=7 ArrayJobId=5 ArrayTaskId=1 JobName=msm-eval UserId=root(0) MCS_label=N/A "
        "JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=2:0 RunTime=01:02:03 "
        "Partition=h100-long AllocNode:Sid=localhost:2426 NodeList=node2 BatchHost=node2 "
        "CPUs/Task=1 Command=/repo/slurm/eval_array.sbatch /out/plan.json eval "
        "StdOut=/out/logs/eval-5_1.log Power=")


def test_scontrol_line_parses_into_a_task():
    fields = parse_fields(LINE)
    assert fields["Command"] == "/repo/slurm/eval_array.sbatch /out/plan.json eval"
    assert fields["MCS_label"] == "N/A" and fields["CPUs/Task"] == "1" and fields["Power"] == ""
    task = task_from_fields("5", fields)
    assert (task.label, task.state, task.nodes, task.exit_code, task.log) == (
        "5_1", "FAILED", "node2", "2:0", "/out/logs/eval-5_1.log")
    pending = task_from_fields("9", parse_fields("JobId=9 JobState=PENDING NodeList= "
                                                 "BatchHost=(null) Reason=Dependency"))
    assert pending.nodes in ("", "(null)") and not pending.ended


def _plan(tmp_path: Path) -> Plan:
    """prep -> train -> export -> eval (array of two cells) -> report, and an unrelated stage."""
    def stage(name, deps, cells=None):
        return Stage(name, name.split("/")[0], deps, {}, {}, hash=f"h-{name}",
                     out=str(tmp_path / name), cells=cells or {})
    stages = [stage("prep", []), stage("train/s0", ["prep"]), stage("export/a", ["train/s0"]),
              stage("eval", ["export/a"], {"a": [], "b": []}), stage("report", ["eval"]),
              stage("other", [])]
    return Plan("study", str(tmp_path), {s.name: s for s in stages})


def _ledger(plan: Plan, jobs: dict[str, str]) -> dict:
    logs = Path(plan.out_dir) / "logs"
    return {name: {"job": job, "hash": plan.stages[name].hash,
                   "log": str(logs / f"{name.replace('/', '-')}-"
                              f"{'%A_%a' if plan.stages[name].cells else '%j'}.log")}
            for name, job in jobs.items()}


def _fake_slurm(monkeypatch, tasks: list[JobTask]) -> None:
    by_job: dict[str, list[JobTask]] = {}
    for t in tasks:
        by_job.setdefault(t.job, []).append(t)
    monkeypatch.setattr(status, "show_jobs",
                        lambda jobs: {j: by_job[j] for j in jobs if j in by_job})


def test_a_failed_job_names_its_node_and_log_and_cancels_its_dependents(tmp_path, monkeypatch):
    plan = _plan(tmp_path)
    write_marker(plan, plan.stages["prep"])
    ledger = _ledger(plan, {"prep": "10", "train/s0": "11", "export/a": "12", "eval": "13",
                            "report": "14"})
    log = tmp_path / "logs" / "train-s0-11.log"
    log.parent.mkdir(parents=True)
    log.write_text("step 3 | loss 4.2\nerror: out of memory\nsrun: error: node2: task 1: "
                   "Killed\nsrun: error: node1: task 0: Exited with exit code 1\n")
    _fake_slurm(monkeypatch, [
        JobTask("11", "", "FAILED", "NonZeroExitCode", "node[1-2]", "00:01:40", "1:0", "h100-long",
                str(log)),
        JobTask("12", "", "CANCELLED", "DependencyNeverSatisfied", log=str(
            tmp_path / "logs" / "export-a-12.log")),
        JobTask("13", "0-1%4", "CANCELLED", "DependencyNeverSatisfied",
                log=str(tmp_path / "logs" / "eval-13_4294967294.log")),
        JobTask("14", "", "CANCELLED", "DependencyNeverSatisfied")])
    rows = status.collect(plan, ledger)
    assert [r.state for r in rows.values()] == ["done", "failed", "cancelled", "cancelled",
                                                "cancelled", "not submitted"]
    train = rows["train/s0"]
    assert (train.job, train.nodes, train.log) == ("11", "node[1-2]", str(log))
    assert train.note == "error: out of memory"  # Slurm's own srun line is not the stage's
    assert status.report_line(train).startswith(  # which node's task failed, from srun
        f"[pipeline] train/s0: job 11 FAILED (exit 1) on node[1-2]; log: {log}\n"
        "    failed tasks: node2 task 1: Killed; node1 task 0: Exited with exit code 1\n"
        "    last log line: error: out of memory")
    for name in ("export/a", "eval", "report"):
        assert status.report_line(rows[name]) == (
            f"[pipeline] {name}: job {ledger[name]['job']} CANCELLED because train/s0 failed")
    table = status.format_status(plan, rows)
    assert "1 done, 1 failed, 3 cancelled, 1 not submitted" in table
    assert f"train/s0: log {log}" in table


def test_live_jobs_show_pending_reasons_running_arrays_and_forgotten_jobs(tmp_path,
                                                                          monkeypatch):
    plan = _plan(tmp_path)
    for name in ("prep", "train/s0", "export/a"):
        write_marker(plan, plan.stages[name])
    write_marker(plan, plan.stages["eval"], "a")
    ledger = _ledger(plan, {"prep": "10", "eval": "13", "report": "14", "other": "3"})
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "eval-13_1.log").write_text("arm b: 3/8 samples\r arm b: 5/8 samples")
    (tmp_path / "logs" / "other-3.log").write_text("Traceback ...\nValueError: bad\n")
    _fake_slurm(monkeypatch, [
        JobTask("13", "0", "COMPLETED", "None", "node1", "00:00:30", "0:0"),
        JobTask("13", "1", "RUNNING", "None", "node2", "00:02:00", "0:0",
                log=str(tmp_path / "logs" / "eval-13_1.log")),
        JobTask("14", "", "PENDING", "Dependency")])  # job 3 is forgotten by the controller
    rows = status.collect(plan, ledger)
    assert rows["eval"].state == "running" and rows["eval"].nodes == "node2"
    assert rows["eval"].note == "arm b: 5/8 samples"
    assert (rows["report"].state, rows["report"].note) == ("pending", "waiting: Dependency")
    assert (rows["other"].state, rows["other"].note) == ("failed", "ValueError: bad")
    assert rows["prep"].state == "done" and rows["prep"].job == "10"


def test_a_reused_job_id_of_another_study_is_not_ours(tmp_path, monkeypatch):
    plan = _plan(tmp_path)
    ledger = _ledger(plan, {"prep": "10"})
    _fake_slurm(monkeypatch, [JobTask("10", "", "RUNNING", log="/elsewhere/x-10.log")])
    assert status.collect(plan, ledger)["prep"].state == "cancelled"  # never ran: no log


def _executor(monkeypatch, plan: Plan) -> slurm.SlurmExecutor:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    return slurm.SlurmExecutor(plan, Path(plan.out_dir) / "plan.json",
                               ExperimentConfig().slurm.__class__(cluster="local"))


def test_each_stage_kind_gets_its_partition_options_and_environment(tmp_path, monkeypatch):
    from msm_megatron.pipeline.plan import build_plan

    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(f"""
out_dir: {tmp_path / 'out'}
cpu_stages: {{resources: {{partition: cpu, sbatch_args: [--qos=low]}}}}
midtrain:
  recipe: qwen3_toy_midtrain
  resources: {{container: "nvcr.io#nvidia/pytorch:25.10-py3"}}
sft: {{recipe: qwen3_toy_sft, resources: {{python: envs/train/bin/python, container: none}}}}
eval: {{resources: {{python: envs/vllm/bin/python, partition: h100-long}}}}
""")
    exp = load_config(ExperimentConfig, exp_file, [], what="experiment")
    assert exp.eval.resources.time == "12:00:00"  # the eval's own default kept
    plan = build_plan(exp)
    ex = _executor(monkeypatch, plan)
    lines = {s.kind: ex.sbatch_command(s) for s in plan.order()}
    for kind in ("tokenizer", "prepare_corpus", "prepare_sft", "export", "report"):
        assert "--partition=cpu" in lines[kind] and "--qos=low" in lines[kind], kind
        assert not any(a.startswith(("--gpus", "--export")) for a in lines[kind]), kind
    assert "--kill-on-invalid-dep=yes" in lines["eval"]
    assert not any(a.startswith("--partition") for a in lines["midtrain"])  # the cluster's
    assert ("--export=ALL,MSM_JOB_CONTAINER=nvcr.io#nvidia/pytorch:25.10-py3,"
            "MSM_JOB_PYTHON=python") in lines["midtrain"]
    assert (f"--export=ALL,MSM_JOB_CONTAINER=none,MSM_JOB_PYTHON="
            f"{tmp_path}/envs/train/bin/python") in lines["sft"]
    assert f"--export=ALL,MSM_JOB_PYTHON={tmp_path}/envs/vllm/bin/python" in lines["eval"]
    assert lines["eval"][-3].endswith("eval_array.sbatch")


def test_resources_sbatch_cannot_take_are_refused_up_front(tmp_path, monkeypatch):
    plan = _plan(tmp_path)
    plan.stages["prep"].resources = {"sbatch_args": ["qos=high", "--output=x.log"],
                                     "partition": "gpu a"}
    plan.stages["eval"].resources = {"python": "/envs/a,b/python"}
    with pytest.raises(ConfigError) as err:
        _executor(monkeypatch, plan)
    text = str(err.value)
    assert "cpu_stages.resources.sbatch_args: 'qos=high' is not an sbatch option" in text
    assert "cpu_stages.resources.sbatch_args: --output is set by msm pipeline" in text
    assert "cpu_stages.resources.partition='gpu a'" in text
    assert "eval.resources.python='/envs/a,b/python': a comma" in text


def test_wait_returns_nonzero_unless_every_marker_is_done(tmp_path, monkeypatch, capsys):
    plan = _plan(tmp_path)
    ex = _executor(monkeypatch, plan)
    ledger = _ledger(plan, {name: str(i) for i, name in enumerate(plan.stages, start=20)})
    status.ledger_path(plan).parent.mkdir(parents=True)
    status.ledger_path(plan).write_text(json.dumps(ledger))
    calls = []

    def slurm_now(jobs):  # first poll: all running; then every job completed
        calls.append(jobs)
        if len(calls) == 1:
            return {j: [JobTask(j, "", "RUNNING", nodes="node1")] for j in jobs}
        for s in plan.order():
            for cell in list(s.cells) or [None]:
                if s.name != "report":  # report's job "completed" without its marker
                    write_marker(plan, s, cell)
        return {j: [JobTask(j, "", "COMPLETED", nodes="node1")] for j in jobs}

    monkeypatch.setattr(status, "show_jobs", slurm_now)
    assert ex.wait(poll_s=0) == 1
    out, err = capsys.readouterr()
    assert "[pipeline] eval: job 23 completed" in out and "every stage is done" not in out
    assert "[pipeline] report: job 24 FAILED" in err and "not done: report (failed)" in err
