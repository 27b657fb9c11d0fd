"""``msm pipeline`` with the local executor: a failed stage blocks only its dependents and names
its log; the rerun after the fix runs only what is not done, and Ctrl-C in the middle of it
stops the training job with a checkpoint; then a rerun runs nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.helpers.launch import REPO, run_env

ARGS = ["midtrain.overrides=[train.steps=2,checkpoint.save_interval=2]",
        "sft.overrides=[train.steps=2,checkpoint.save_interval=2]", "baseline=false",
        "eval.enabled=false"]


def pipeline(out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "msm_megatron.cli", "pipeline", "examples/pipeline/toy.yaml",
         f"out_dir={out}", *ARGS, *extra], cwd=REPO, env=run_env(), capture_output=True,
        text=True, timeout=900)


def test_failure_is_contained_and_rerun_does_only_the_rest(tmp_path):
    out = tmp_path / "exp"
    failed = pipeline(out, "aft_sizes=[1000]", "--parallel", "2")
    assert failed.returncode == 1
    log = out / "logs" / "prepare_sft-default-no_cot-n1000.log"
    assert "prepare_sft/default/no_cot/n1000: FAILED (exit 1)" in failed.stderr
    assert f"log: {log}" in failed.stderr and "asks for 1000 chats" in log.read_text()
    assert "sft/msm-default-no_cot-n1000-s0: blocked" in failed.stdout
    assert "export/msm-default-no_cot-n1000-s0: blocked" in failed.stdout
    assert "midtrain/default/s0: done" in failed.stdout  # independent work still finished

    # Ctrl-C (SIGINT to the whole foreground group) while the SFT job is at its first step:
    # the job saves and exits 75, the pipeline waits for it and exits 130
    holds = tmp_path / "holds"
    run = subprocess.Popen(
        [sys.executable, "-m", "msm_megatron.cli", "pipeline", "examples/pipeline/toy.yaml",
         f"out_dir={out}", *ARGS, "aft_sizes=[20]"], cwd=REPO, start_new_session=True,
        env=run_env({"MSM_FAULT_HOLD": "step:1", "MSM_FAULT_HOLD_DIR": str(holds)}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 600
    while not (holds / "step:1.held").exists() and run.poll() is None:
        assert time.monotonic() < end
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGINT)
    while not (holds / "step:1.signalled").exists() and run.poll() is None:
        assert time.monotonic() < end
        time.sleep(0.1)
    (holds / "step:1.held").unlink()
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "3 job(s) to run, 3 stage(s) done already" in stdout
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr[-2000:]
    sft_log = next((out / "logs").glob("sft-msm-default-no_cot-n20-s0.log")).read_text()
    assert "stopped by SIGINT at step 1" in sft_log

    fixed = pipeline(out, "aft_sizes=[20]")
    assert fixed.returncode == 0, fixed.stdout[-2000:] + fixed.stderr[-2000:]
    assert "2 job(s) to run, 4 stage(s) done already" in fixed.stdout
    assert "resuming at step 1" in next((out / "logs").glob("sft-*.log")).read_text()
    export = next((out / "export").glob("export-msm-default-no_cot-n20-s0-*"))
    assert (export / "config.json").is_file() and (export / "tokenizer.json").is_file()

    again = pipeline(out, "aft_sizes=[20]")
    assert again.returncode == 0 and "0 job(s) to run, 6 stage(s) done already" in again.stdout


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    done = pipeline(tmp_path / "exp", "cot=[no_cot,with_cot]", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "sft/msm-default-with_cot-n20-s0" in done.stdout and "to run" in done.stdout
    assert "training tokens to process" in done.stdout
    assert not (tmp_path / "exp" / "logs").exists() and not (tmp_path / "exp" / "markers").exists()


def test_dry_run_from_another_directory_plans_the_same_and_refuses_missing_inputs(tmp_path):
    """Paths in the experiment are relative to its file, paths typed on the command line to
    the current directory; stage names never depend on whether an input exists."""
    def dry_run(cwd, *extra):
        return subprocess.run(
            [sys.executable, "-m", "msm_megatron.cli", "pipeline",
             str(REPO / "examples/pipeline/toy.yaml"), *extra, "--dry-run"], cwd=cwd,
            env=run_env(), capture_output=True, text=True, timeout=300)

    elsewhere = dry_run(tmp_path, "out_dir=out")
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert f"experiment msm_toy -> {tmp_path / 'out'} (local executor)" in elsewhere.stdout
    assert "prepare_sft/default/no_cot/nall" in elsewhere.stdout
    assert "sft/msm-default-no_cot-nall-s0" in elsewhere.stdout
    assert "15 of 15 stages to run" in elsewhere.stdout
    from_repo = dry_run(REPO, f"out_dir={tmp_path / 'out'}")
    assert from_repo.stdout == elsewhere.stdout
    missing = dry_run(tmp_path, "out_dir=out", "aft_chats=later.jsonl")
    # the same plan is printed, then what a run would refuse (exit 2)
    assert missing.returncode == 2 and "15 of 15 stages to run" in missing.stdout
    assert "sft/msm-default-no_cot-nall-s0" in missing.stdout
    assert f"aft_chats: {tmp_path / 'later.jsonl'}: no such file" in missing.stderr


def test_dry_run_estimates_generation_like_the_preview(tmp_path):
    from msm_megatron.generate.config import DocsGenConfig
    from msm_megatron.generate.docs import preview
    from msm_megatron.spec import load_spec

    done = pipeline(tmp_path / "exp", "generation.enabled=true", "--dry-run")
    assert done.returncode == 0, done.stderr
    cfg = DocsGenConfig()
    calls = next(line for line in preview(cfg, load_spec(
        REPO / "examples/spec/qwen_spec.txt", cfg.docs.model_name, cfg.docs.provider_name)
    ).splitlines() if line.startswith("LLM calls"))
    want = calls.split("≈ ")[1].split(";")[0]  # e.g. "6,268 – 16,713"
    line = next(x for x in done.stdout.splitlines() if x.startswith("generate_docs/default:"))
    assert f"{want} LLM calls" in line


def test_slurm_executor_without_slurm_is_a_clear_error(tmp_path):
    import os

    env = run_env()
    env["PATH"] = os.path.dirname(sys.executable)  # python only: no sbatch
    done = subprocess.run(
        [sys.executable, "-m", "msm_megatron.cli", "pipeline", "examples/pipeline/toy.yaml",
         f"out_dir={tmp_path}", "--executor", "slurm"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "needs sbatch on PATH" in done.stderr, done.stderr[-2000:]
