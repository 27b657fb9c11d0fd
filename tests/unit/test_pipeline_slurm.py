"""The Slurm dry run: `msm pipeline --executor slurm --dry-run` prints the sbatch line of every
job it would submit — the same lines a submission runs — on a machine without Slurm too, and
refuses resources sbatch would not take in the same list as every other problem."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from msm_megatron.cli import main
from msm_megatron.config import ConfigError, load_config
from msm_megatron.pipeline import slurm
from msm_megatron.pipeline.checks import preflight
from msm_megatron.pipeline.experiment import ExperimentConfig
from msm_megatron.pipeline.markers import write_marker
from msm_megatron.pipeline.plan import build_plan

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "examples/pipeline/toy.yaml"
RESOURCES = ["slurm.cluster=local", "midtrain.resources.partition=gpu-long",
             "midtrain.resources.time=01:30:00", "eval.resources.python=/envs/vllm/bin/python"]


def toy_args(tmp_path: Path, *overrides: str) -> list[str]:
    return [str(TOY), f"out_dir={tmp_path / 'out'}", *RESOURCES, *overrides]


def job_lines(out: str) -> dict[str, str]:
    """Stage variable -> the sbatch command inside ``JOB_x=$(...)``."""
    lines = [line for line in out.splitlines() if line.startswith("JOB_")]
    return {line.split("=", 1)[0]: line.split("=$(", 1)[1].removesuffix(")") for line in lines}


def test_the_dry_run_prints_one_sbatch_line_per_stage_not_done(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # a laptop or CI: no Slurm at all
    args = toy_args(tmp_path)
    plan, _ = preflight(load_config(ExperimentConfig, args[0], args[1:]), "slurm", True)
    for done in ("tokenizer", "prepare_corpus/default"):
        write_marker(plan, plan.stages[done])
    assert main(["pipeline", *args, "--executor", "slurm", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out.index("stage ") < out.index("JOB_")  # after the plan table
    assert "sbatch was not found on PATH" in out and "error" not in err
    jobs = job_lines(out)
    assert len(jobs) == len(plan.stages) - 2 and "JOB_tokenizer" not in jobs
    plan_json = tmp_path / "out/pipeline/plan.json"
    assert not plan_json.exists()  # nothing written, nothing submitted
    assert f"export SBATCH_PARTITION=h100-long MSM_REPO={REPO} MSM_CLUSTER_ENV=" \
           f"{REPO}/slurm/clusters/local.env MSM_PYTHON=" in out
    assert f"mkdir -p {tmp_path}/out/logs" in out
    mid = jobs["JOB_midtrain_default_s0"]
    assert mid.startswith("sbatch --parsable --job-name=msm-midtrain-default-s0 ")
    for part in ("--partition=gpu-long", "--time=01:30:00", "--nodes=1", "--signal=B:USR1@300",
                 "--kill-on-invalid-dep=yes",
                 f"{REPO}/slurm/train.sbatch {plan_json} midtrain/default/s0"):
        assert part in mid, part
    assert "--dependency" not in mid  # its one dependency (prepare_corpus) is done
    sft = jobs["JOB_sft_msm_default_no_cot_n20_s0"]
    assert ("--dependency=afterok:${JOB_prepare_sft_default_no_cot_n20}"
            ":${JOB_midtrain_default_s0} ") in sft
    assert "--partition" not in sft  # the cluster file's SBATCH_PARTITION
    ev = jobs["JOB_eval"]
    assert "--array=0-3%4" in ev and "--time=12:00:00" in ev
    assert "--export=ALL,MSM_JOB_PYTHON=/envs/vllm/bin/python" in ev
    assert ev.endswith(f"{REPO}/slurm/eval_array.sbatch {plan_json} eval")


def test_the_dry_run_lines_are_the_lines_a_submission_runs(tmp_path, monkeypatch, capsys):
    exp = load_config(ExperimentConfig, TOY, toy_args(tmp_path)[1:])
    plan = build_plan(exp)
    executor = slurm.SlurmExecutor(plan, tmp_path / "plan.json", exp.slurm)
    script = executor.script()
    ran = []

    def sbatch(cmd, env, **kwargs):
        ran.append(cmd)
        assert env["SBATCH_PARTITION"] == "h100-long" and env["MSM_REPO"] == str(REPO)
        return subprocess.CompletedProcess(cmd, 0, f"{100 + len(ran)}\n", "")

    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm.subprocess, "run", sbatch)
    submitted = executor.submit()
    ids = {slurm.job_variables(list(plan.stages))[name]: job for name, job in submitted.items()}
    pasted = []
    for line in job_lines("\n".join(script)).values():
        for name, job in ids.items():
            line = line.replace(f"${{{name}}}", job)
        pasted.append(shlex.split(line))
    assert pasted == ran and len(ran) == len(plan.stages)


def test_a_submission_without_sbatch_refuses_naming_the_login_node(tmp_path, monkeypatch):
    exp = load_config(ExperimentConfig, TOY, toy_args(tmp_path)[1:])
    executor = slurm.SlurmExecutor(build_plan(exp), tmp_path / "plan.json", exp.slurm)
    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="login node"):
        executor.submit()


def test_bad_resources_are_listed_with_every_other_problem(tmp_path, capsys):
    bad = ["cpu_stages.resources.sbatch_args=[qos=high,--array=0-3]",
           "eval.resources.partition=h100 long", "aft_chats=no_chats.jsonl"]
    assert main(["pipeline", *toy_args(tmp_path, *bad), "--executor", "slurm",
                 "--dry-run"]) == 2
    out, err = capsys.readouterr()
    for fact in ("aft_chats: ", "cpu_stages.resources.sbatch_args: 'qos=high' is not an sbatch "
                 "option", "cpu_stages.resources.sbatch_args: --array is set by msm pipeline",
                 "eval.resources.partition='h100 long': one partition name"):
        assert fact in err, fact
    assert err.count("\n  - ") == 4 and "JOB_" not in out
    exp = load_config(ExperimentConfig, TOY, toy_args(tmp_path, *bad[:2])[1:])
    with pytest.raises(ConfigError, match="nothing was run or submitted") as refusal:
        preflight(exp, "slurm", dry_run=False)  # a submission refuses the same way
    assert "'qos=high' is not an sbatch option" in str(refusal.value)
    preflight(exp, "local", dry_run=False)  # the local executor ignores them


def test_sbatch_lines_quote_what_bash_would_split_and_expand_job_variables():
    names = slurm.job_variables(["prepare_corpus/a-b", "prepare_corpus/a_b", "eval"])
    assert names == {"prepare_corpus/a-b": "JOB_prepare_corpus_a_b",
                     "prepare_corpus/a_b": "JOB_prepare_corpus_a_b_2", "eval": "JOB_eval"}
    line = slurm.shell_line(["sbatch", "--dependency=afterok:${JOB_a}:${JOB_b_2}",
                             "--export=ALL,MSM_JOB_CONTAINER=nvcr.io#nvidia/pytorch:25.10-py3",
                             "--comment=two words", "", "$HOME"])
    words = subprocess.run(["bash", "-c", f'JOB_a=11 JOB_b_2=12; printf "%s\\n" {line}'],
                           capture_output=True, text=True, check=True).stdout.split("\n")
    assert words[:-1] == ["sbatch", "--dependency=afterok:11:12",
                          "--export=ALL,MSM_JOB_CONTAINER=nvcr.io#nvidia/pytorch:25.10-py3",
                          "--comment=two words", "", "$HOME"]
