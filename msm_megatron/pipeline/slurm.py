"""The Slurm executor: every stage that is not done becomes an ``sbatch`` job.

- Dependencies are ``--dependency=afterok:<ids>`` on the stages' jobs (done stages need no
  job), and every job is submitted with ``--kill-on-invalid-dep=yes``: when a job fails, Slurm
  cancels its dependents (and theirs) instead of leaving them pending forever, on any cluster.
- The eval stage is a job array (``--array=0-<n-1>%<throttle>``), one task per arm.
- Training jobs use ``slurm/train.sbatch``: one task per GPU, ``--signal=B:USR1@<s>`` before
  the time limit, checkpoint-then-requeue on exit 75, ``--open-mode=append`` logs.
- Cluster specifics come from ``slurm/clusters/<name>.env``: its ``SBATCH_*`` variables are
  sbatch's input environment, and jobs source the whole file (``slurm/common.sh``). A stage's
  ``resources`` come after it: ``partition`` and ``sbatch_args`` are sbatch options (which win
  over ``SBATCH_*``), ``python`` / ``container`` reach the job as ``MSM_JOB_PYTHON`` /
  ``MSM_JOB_CONTAINER`` (``--export=ALL,...``), which common.sh prefers to the cluster file's.
- Logs: ``<out_dir>/logs/<stage>-<jobid>.log`` (``%A_%a`` for array tasks). Submitted job ids
  are recorded in ``<out_dir>/pipeline/slurm_jobs.json`` (after each sbatch); a rerun whose
  stage still has a pending or running job with the same hash reuses it instead of submitting
  twice, and ``--wait`` waits for those jobs too (:mod:`~msm_megatron.pipeline.status`).
- ``--dry-run`` prints the submission as a shell script (:meth:`SlurmExecutor.script`): the
  environment sbatch gets, then one ``JOB_<stage>=$(sbatch ...)`` line per stage that is not
  done, built by the same :meth:`SlurmExecutor.sbatch_command` as the real submission, with
  ``--dependency=afterok:${JOB_<stage>}`` for the jobs it waits on. No Slurm is needed for it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from msm_megatron.config import ConfigError
from msm_megatron.pipeline.experiment import SlurmSettings
from msm_megatron.pipeline.markers import is_done
from msm_megatron.pipeline.plan import Plan, Stage, ranks_per_node, slug
from msm_megatron.pipeline.slurm_jobs import cancel, show_jobs
from msm_megatron.pipeline.status import (
    LIVE_STATES,
    collect,
    is_ours,
    ledger_path,
    read_ledger,
    report_line,
)

REPO = Path(__file__).resolve().parents[2]
# the experiment field that sets a stage kind's resources (for error messages)
RESOURCES_FIELD = {"midtrain": "midtrain.resources", "sft": "sft.resources",
                   "generate_docs": "generation.resources",
                   "generate_chats": "generation.resources", "eval": "eval.resources"}
# sbatch options the executor sets itself; sbatch_args may not repeat them
OWN_OPTIONS = ("--dependency", "-d", "--array", "-a", "--output", "-o", "--error", "-e",
               "--job-name", "-J", "--parsable", "--kill-on-invalid-dep", "--export")
# a dry run's stand-in for a job id sbatch has not printed yet (a shell variable)
JOB_VARIABLE = re.compile(r"(\$\{JOB_\w+\})")
NO_SBATCH = ("--executor slurm needs sbatch on PATH: run it on the cluster's login node (or use "
             "the local executor)")


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


def resources_field(stage: Stage) -> str:
    """The experiment key that sets ``stage``'s resources (``cpu_stages.resources``, ...)."""
    return RESOURCES_FIELD.get(stage.kind, "cpu_stages.resources")


def resource_problems(plan: Plan) -> list[str]:
    """What sbatch would refuse, or what would not reach the job, in the stages' resources."""
    problems = []
    for stage in plan.order():
        res, where = stage.resources, resources_field(stage)
        for arg in res.get("sbatch_args") or []:
            option = arg.split("=", 1)[0]
            if not arg.startswith("-"):
                problems.append(f"{where}.sbatch_args: {arg!r} is not an sbatch option "
                                "(write it as sbatch takes it, e.g. --qos=high)")
            elif option in OWN_OPTIONS:
                problems.append(f"{where}.sbatch_args: {option} is set by msm pipeline itself; "
                                "remove it")
        if any(c.isspace() for c in res.get("partition") or ""):
            problems.append(f"{where}.partition={res['partition']!r}: one partition name, or "
                            "a comma-separated list without spaces")
        for key in ("python", "container"):
            if "," in (res.get(key) or ""):
                problems.append(f"{where}.{key}={res[key]!r}: a comma cannot pass through "
                                "sbatch --export; use a path without one")
    return list(dict.fromkeys(problems))


class SlurmExecutor:
    """Submits a plan's stages to Slurm and follows their jobs."""

    def __init__(self, plan: Plan, plan_path: Path, settings: SlurmSettings):
        problems = resource_problems(plan)
        if problems:
            raise ConfigError("the stages' resources cannot be submitted:\n  "
                              + "\n  ".join(problems))
        self.plan, self.plan_path, self.settings = plan, plan_path, settings
        self.env_file = cluster_env_file(settings.cluster)
        self.jobs: dict[str, str] = {}  # stage -> its job (submitted now, or still queued)

    def sbatch_environment(self) -> dict[str, str]:
        """What sbatch gets on top of this shell's environment: the cluster file's
        ``SBATCH_*`` variables, and ``MSM_REPO``, ``MSM_CLUSTER_ENV`` and ``MSM_PYTHON`` (this
        shell's, else the Python running ``msm``), which the jobs inherit."""
        env = {k: v for k, v in read_env_file(self.env_file).items() if k.startswith("SBATCH_")}
        env.update(MSM_REPO=str(REPO), MSM_CLUSTER_ENV=str(self.env_file.resolve()),
                   MSM_PYTHON=os.environ.get("MSM_PYTHON", sys.executable))
        return env

    def submit(self) -> dict[str, str]:
        """Submit every stage that is not done and has no live job for its hash; returns
        {stage: job id} of the new submissions (``self.jobs`` also holds the reused jobs)."""
        if shutil.which("sbatch") is None:
            raise ConfigError(NO_SBATCH)
        ledger = read_ledger(self.plan)
        live = live_jobs(ledger)
        submitted = {}
        for stage in self.plan.order():
            if is_done(self.plan, stage):
                continue
            old = ledger.get(stage.name)
            if old and old.get("hash") == stage.hash and old["job"] in live:
                self.jobs[stage.name] = old["job"]
                print(f"[pipeline] {stage.name}: job {old['job']} still "
                      f"{live[old['job']].lower()}; not submitting again")
                continue
            job = self._sbatch(stage)
            self.jobs[stage.name] = submitted[stage.name] = job
            ledger[stage.name] = {"job": job, "hash": stage.hash, "log": self.log_pattern(stage)}
            _write_json(ledger_path(self.plan), ledger)  # each job, so none is ever lost
            print(f"[pipeline] {stage.name}: submitted job {job}"
                  + (f" (array of {len(stage.cells)})" if stage.cells else ""))
        return submitted

    def log_pattern(self, stage: Stage) -> str:
        suffix = "%A_%a" if stage.cells else "%j"
        return str(Path(self.plan.out_dir) / "logs" / f"{slug(stage.name)}-{suffix}.log")

    def sbatch_command(self, stage: Stage, jobs: dict[str, str] | None = None) -> list[str]:
        """The sbatch command line of ``stage``: what :meth:`submit` runs and what
        :meth:`script` prints.

        Args:
            stage: A stage of the plan.
            jobs: Stage -> job id of the stages it may depend on (default ``self.jobs``); a
                stage without one (done) is no dependency.
        """
        jobs = self.jobs if jobs is None else jobs
        res = stage.resources
        training = stage.kind in ("midtrain", "sft")
        script = ("train.sbatch" if training else
                  "eval_array.sbatch" if stage.cells else "stage.sbatch")
        cmd = ["sbatch", "--parsable", f"--job-name={self.settings.job_prefix}-{slug(stage.name)}",
               f"--output={self.log_pattern(stage)}", f"--nodes={res['nodes']}",
               f"--time={res['time']}", f"--cpus-per-task={res['cpus_per_task']}",
               "--kill-on-invalid-dep=yes"]
        if training:
            cmd += [f"--ntasks-per-node={ranks_per_node(res)}",
                    f"--signal=B:USR1@{self.settings.signal_seconds}"]
        if res["gpus_per_node"]:
            cmd.append(f"--gpus-per-node={res['gpus_per_node']}")
        if res.get("mem"):
            cmd.append(f"--mem={res['mem']}")
        deps = [jobs[d] for d in stage.deps if d in jobs]
        if deps:
            cmd.append("--dependency=afterok:" + ":".join(deps))
        if stage.cells:
            throttle = max(1, res.get("array_throttle", 4))
            cmd.append(f"--array=0-{len(stage.cells) - 1}%{throttle}")
        if res.get("partition"):
            cmd.append(f"--partition={res['partition']}")
        cmd += job_environment(res) + list(res.get("sbatch_args") or [])
        return [*cmd, str(REPO / "slurm" / script), str(self.plan_path), stage.name]

    def _sbatch(self, stage: Stage) -> str:
        Path(self.plan.out_dir, "logs").mkdir(parents=True, exist_ok=True)
        cmd = self.sbatch_command(stage)
        done = subprocess.run(cmd, env={**os.environ, **self.sbatch_environment()},
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"sbatch for stage {stage.name} failed: {done.stderr.strip()}\n"
                               f"command: {shell_line(cmd)}")
        return done.stdout.strip().split(";")[0]

    def script(self) -> list[str]:
        """The submission as shell lines (``--dry-run``; submits nothing, needs no Slurm).

        Comments first (what the lines are; a note when sbatch is not on PATH here), then
        ``export`` of :meth:`sbatch_environment`, ``mkdir -p`` of the log folder, and one
        ``JOB_<stage>=$(sbatch ...)`` line per stage that is not done, in submission order;
        a dependency on a job not submitted yet reads ``afterok:${JOB_<stage>}``. Pasted
        into bash, they submit what :meth:`submit` would — once the plan file they name
        exists (a submission writes it).
        """
        todo = [s for s in self.plan.order() if not is_done(self.plan, s)]
        if not todo:
            return ["# sbatch: nothing to submit, every stage is done"]
        names = job_variables([s.name for s in todo])
        lines = [f"# the {len(todo)} job(s) to submit, as sbatch lines (nothing was submitted);",
                 "# ${JOB_<stage>} holds the job id sbatch prints for that stage's job;",
                 f"# the jobs read {self.plan_path}, which msm pipeline writes when it submits"]
        if shutil.which("sbatch") is None:
            lines.append("# note: sbatch was not found on PATH here; submit from the cluster's "
                         "login node")
        env = self.sbatch_environment()
        lines += ["export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()),
                  f"mkdir -p {shlex.quote(str(Path(self.plan.out_dir, 'logs')))}"]
        ledger, jobs = read_ledger(self.plan), {}
        for stage in todo:
            old = ledger.get(stage.name)
            if old and old.get("hash") == stage.hash:
                lines.append(f"# {stage.name}: job {old['job']} was submitted for it before; "
                             "while it is queued or running, msm pipeline reuses it instead")
            lines.append(f"{names[stage.name]}=$({shell_line(self.sbatch_command(stage, jobs))})")
            jobs[stage.name] = f"${{{names[stage.name]}}}"
        return lines

    def wait(self, poll_s: float = 1.0) -> int:
        """Poll until no stage has a pending or running job — those of earlier submissions
        included — announcing each stage as it ends; 0 only when every stage is done."""
        watched = [s.name for s in self.plan.order() if not is_done(self.plan, s)]
        told: dict[str, str] = {}
        try:
            while True:
                statuses = collect(self.plan)
                for name in watched:
                    status = statuses[name]
                    if status.state not in LIVE_STATES and told.get(name) != status.state:
                        told[name] = status.state
                        print(report_line(status), flush=True,
                              file=sys.stdout if status.state == "done" else sys.stderr)
                if not any(s.state in LIVE_STATES for s in statuses.values()):
                    return _final_word(self.plan, statuses)
                time.sleep(poll_s)
        except KeyboardInterrupt:
            print("\n[pipeline] stopped waiting; the jobs go on (see `msm pipeline "
                  "<experiment> --status`)", file=sys.stderr)
            return 130


def job_variables(stages: list[str]) -> dict[str, str]:
    """Stage -> the shell variable a dry run's script keeps its job id in:
    ``prepare_corpus/default`` -> ``JOB_prepare_corpus_default`` (``_2``, ... on a clash)."""
    names: dict[str, str] = {}
    for stage in stages:
        base = "JOB_" + re.sub(r"\W", "_", stage, flags=re.ASCII)
        name, n = base, 1
        while name in names.values():
            n += 1
            name = f"{base}_{n}"
        names[stage] = name
    return names


def shell_line(cmd: list[str]) -> str:
    """``cmd`` as one bash line: each word quoted where needed, ``${JOB_...}`` left to expand."""
    words = ["".join(part if JOB_VARIABLE.fullmatch(part) else shlex.quote(part)
                     for part in JOB_VARIABLE.split(word) if part) or "''" for word in cmd]
    return " ".join(words)


def job_environment(res: dict) -> list[str]:
    """``--export=ALL,MSM_JOB_CONTAINER=...,MSM_JOB_PYTHON=...`` for a stage's own container
    and Python ([] for neither). A container without ``python`` runs the image's ``python``;
    ``container: none`` runs the stage outside the cluster file's container."""
    container, python = res.get("container"), res.get("python")
    extra = {"MSM_JOB_CONTAINER": container} if container else {}
    if python or (container and container != "none"):
        extra["MSM_JOB_PYTHON"] = python or "python"
    if not extra:
        return []
    return ["--export=ALL," + ",".join(f"{k}={v}" for k, v in extra.items())]


def live_jobs(ledger: dict[str, dict]) -> dict[str, str]:
    """Ledger jobs still queued or running: job id -> state. A job pending on a dependency
    that can never be satisfied (submitted without ``--kill-on-invalid-dep``) is cancelled
    and left out, so its stage is submitted again."""
    jobs = show_jobs([entry["job"] for entry in ledger.values()])
    live = {}
    for entry in ledger.values():
        tasks = [t for t in jobs.get(entry["job"], []) if is_ours(t, entry)]
        waiting = [t for t in tasks if not t.ended]
        if waiting and all(t.reason == "DependencyNeverSatisfied" for t in waiting):
            cancel(entry["job"])
        elif waiting:
            live[entry["job"]] = waiting[0].state
    return live


def _final_word(plan: Plan, statuses: dict) -> int:
    unfinished = [s for s in statuses.values() if s.state != "done"]
    if unfinished or not all(is_done(plan, s) for s in plan.order()):
        names = ", ".join(f"{s.stage} ({s.state})" for s in unfinished)
        print(f"[pipeline] not done: {names}. Completed stages are kept: fix the cause and "
              "rerun the same command", file=sys.stderr)
        return 1
    print(f"[pipeline] every stage is done: {plan.out_dir}")
    return 0


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def dry_run_script(plan: Plan, plan_path: Path, settings: SlurmSettings) -> str:
    """``msm pipeline --executor slurm --dry-run``: the sbatch lines of
    :meth:`SlurmExecutor.script`, as text."""
    return "\n".join(SlurmExecutor(plan, plan_path, settings).script())


def run_slurm(plan: Plan, plan_path: Path, settings: SlurmSettings, wait: bool) -> int:
    """``msm pipeline --executor slurm [--wait]``: submit what is not done, then (``wait``)
    follow every job of the plan until none is queued or running."""
    executor = SlurmExecutor(plan, plan_path, settings)
    submitted = executor.submit()
    if all(is_done(plan, s) for s in plan.order()):
        print("[pipeline] nothing to submit: every stage is done")
        return 0
    if not submitted:
        print(f"[pipeline] nothing new to submit: {len(executor.jobs)} stage(s) still have "
              "jobs queued or running")
    return executor.wait() if wait else 0
