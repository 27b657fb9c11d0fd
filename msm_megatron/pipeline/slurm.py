"""The Slurm executor: every stage that is not done becomes an ``sbatch`` job.

- Dependencies are ``--dependency=afterok:<ids>`` on the jobs submitted in the same run (done
  stages need no job); the cluster should set ``DependencyParameters=kill_invalid_depend`` so
  the dependents of a failed job are cancelled rather than left pending.
- The eval stage is a job array (``--array=0-<n-1>%<throttle>``), one task per arm.
- Training jobs use ``slurm/train.sbatch``: one task per GPU, ``--signal=B:USR1@<s>`` before
  the time limit, checkpoint-then-requeue on exit 75, ``--open-mode=append`` logs.
- Cluster specifics come from ``slurm/clusters/<name>.env``: its ``SBATCH_*`` variables are
  sbatch's input environment, and jobs source the whole file (``slurm/common.sh``).
- Logs: ``<out_dir>/logs/<stage>-<jobid>.log`` (``%A_%a`` for array tasks). Submitted job ids
  are recorded in ``<out_dir>/pipeline/slurm_jobs.json``; a rerun whose stage still has a
  pending or running job with the same hash reuses it instead of submitting twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from msm_megatron.config import ConfigError
from msm_megatron.pipeline.experiment import SlurmSettings
from msm_megatron.pipeline.markers import is_done
from msm_megatron.pipeline.plan import Plan, Stage, ranks_per_node, slug

REPO = Path(__file__).resolve().parents[2]
TERMINAL_OK = {"COMPLETED"}
# PREEMPTED is not final: a requeueable job goes back to PENDING
TERMINAL_BAD = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE"}


def cluster_env_file(cluster: str) -> Path:
    path = Path(cluster)
    if not path.suffix:
        path = REPO / "slurm" / "clusters" / f"{cluster}.env"
    if not path.is_file():
        raise ConfigError(f"slurm.cluster={cluster}: {path} not found (copy "
                          "slurm/clusters/example.env and fill it in)")
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blanks skipped; surrounding quotes removed)."""
    env = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.replace("_", "").isalnum():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        env[key.strip()] = value.strip().strip("'\"")
    return env


class SlurmExecutor:
    def __init__(self, plan: Plan, plan_path: Path, settings: SlurmSettings):
        import shutil

        if shutil.which("sbatch") is None:
            raise ConfigError("--executor slurm needs sbatch on PATH: run it on the cluster's "
                              "login node (or use the local executor)")
        self.plan, self.plan_path, self.settings = plan, plan_path, settings
        self.env_file = cluster_env_file(settings.cluster)
        self.ledger_path = Path(plan.out_dir) / "pipeline" / "slurm_jobs.json"
        self.jobs: dict[str, str] = {}  # stage -> job id (this run)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({k: v for k, v in read_env_file(self.env_file).items()
                    if k.startswith("SBATCH_")})
        env.update(MSM_REPO=str(REPO), MSM_CLUSTER_ENV=str(self.env_file.resolve()),
                   MSM_PYTHON=env.get("MSM_PYTHON", sys.executable))
        return env

    def _ledger(self) -> dict:
        try:
            return json.loads(self.ledger_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def submit(self) -> dict[str, str]:
        """Submit every stage that is not done; returns {stage: job id} of new submissions."""
        ledger = self._ledger()
        active = job_states([r["job"] for r in ledger.values()])
        submitted = {}
        for stage in self.plan.order():
            if is_done(self.plan, stage):
                continue
            old = ledger.get(stage.name)
            if old and old["hash"] == stage.hash and active.get(old["job"]) in (
                    "PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING"):
                self.jobs[stage.name] = old["job"]
                print(f"[pipeline] {stage.name}: job {old['job']} still "
                      f"{active[old['job']].lower()}; not submitting again")
                continue
            job = self._sbatch(stage)
            self.jobs[stage.name] = submitted[stage.name] = job
            ledger[stage.name] = {"job": job, "hash": stage.hash, "log": self.log_pattern(stage)}
            print(f"[pipeline] {stage.name}: submitted job {job}"
                  + (f" (array of {len(stage.cells)})" if stage.cells else ""))
        self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
        self.ledger_path.write_text(json.dumps(ledger, indent=1))
        return submitted

    def log_pattern(self, stage: Stage) -> str:
        suffix = "%A_%a" if stage.cells else "%j"
        return str(Path(self.plan.out_dir) / "logs" / f"{slug(stage.name)}-{suffix}.log")

    def sbatch_command(self, stage: Stage) -> list[str]:
        res = stage.resources
        training = stage.kind in ("midtrain", "sft")
        script = ("train.sbatch" if training else
                  "eval_array.sbatch" if stage.cells else "stage.sbatch")
        cmd = ["sbatch", "--parsable", f"--job-name={self.settings.job_prefix}-{slug(stage.name)}",
               f"--output={self.log_pattern(stage)}", f"--nodes={res['nodes']}",
               f"--time={res['time']}", f"--cpus-per-task={res['cpus_per_task']}"]
        if training:
            cmd += [f"--ntasks-per-node={ranks_per_node(res)}",
                    f"--signal=B:USR1@{self.settings.signal_seconds}"]
        if res["gpus_per_node"]:
            cmd.append(f"--gpus-per-node={res['gpus_per_node']}")
        if res.get("mem"):
            cmd.append(f"--mem={res['mem']}")
        deps = [self.jobs[d] for d in stage.deps if d in self.jobs]
        if deps:
            cmd.append("--dependency=afterok:" + ":".join(deps))
        if stage.cells:
            throttle = max(1, res.get("array_throttle", 4))
            cmd.append(f"--array=0-{len(stage.cells) - 1}%{throttle}")
        return [*cmd, str(REPO / "slurm" / script), str(self.plan_path), stage.name]

    def _sbatch(self, stage: Stage) -> str:
        Path(self.plan.out_dir, "logs").mkdir(parents=True, exist_ok=True)
        cmd = self.sbatch_command(stage)
        done = subprocess.run(cmd, env=self._env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"sbatch for stage {stage.name} failed: {done.stderr.strip()}\n"
                               f"command: {' '.join(cmd)}")
        return done.stdout.strip().split(";")[0]

    def wait(self, poll_s: float = 1.0) -> int:
        """Poll until every submitted job ended; report failures with their logs."""
        pending = dict(self.jobs)
        failed = []
        while pending:
            states = job_states(list(pending.values()), arrays=True)
            for stage, job in list(pending.items()):
                state = states.get(job)
                if state in TERMINAL_OK or (state is None and is_done(self.plan,
                                                                     self.plan.stages[stage])):
                    print(f"[pipeline] {stage}: job {job} completed")
                    del pending[stage]
                elif state in TERMINAL_BAD or state is None:
                    log = self.log_pattern(self.plan.stages[stage]).replace("%j", job)
                    log = log.replace("%A", job).replace("%a", "*")
                    print(f"[pipeline] {stage}: job {job} {state or 'ended'} "
                          f"(not completed); log: {log}", file=sys.stderr)
                    failed.append(stage)
                    del pending[stage]
            time.sleep(poll_s)
        if failed:
            print(f"[pipeline] failed or cancelled: {', '.join(failed)}; completed stages are "
                  "kept: fix the cause and rerun the same command", file=sys.stderr)
            return 1
        print(f"[pipeline] all stages done: {self.plan.out_dir}")
        return 0


def job_states(jobs: list[str], arrays: bool = False) -> dict[str, str]:
    """Job id -> state from ``scontrol show job`` (an array: the worst of its tasks, or the
    remaining tasks' state while any runs). Unknown (purged) jobs are absent."""
    states: dict[str, str] = {}
    for job in dict.fromkeys(jobs):
        done = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                              text=True)
        if done.returncode != 0:
            continue
        seen = [field.split("=", 1)[1] for line in done.stdout.splitlines()
                for field in line.split() if field.startswith("JobState=")]
        if not seen:
            continue
        bad = [s for s in seen if s in TERMINAL_BAD]
        live = [s for s in seen if s not in TERMINAL_OK and s not in TERMINAL_BAD]
        states[job] = live[0] if live else (bad[0] if bad else "COMPLETED")
    return states
