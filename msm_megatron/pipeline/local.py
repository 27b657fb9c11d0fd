"""The local executor: the plan's jobs as subprocesses on this machine, ``parallel`` at a time.

Each job is ``python -m msm_megatron.cli pipeline-stage <plan> <stage> [--cell-index I]`` with
its output in ``<out_dir>/logs/<stage>.log``. Done stages are skipped; a job starts when all
its dependencies are done; a failure stops its dependents (reported as blocked), names the
stage and its log, and leaves everything completed intact. Array stages run one job per cell.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from msm_megatron.pipeline.markers import cell_done, is_done
from msm_megatron.pipeline.plan import Plan, slug
from msm_megatron.run_files import REQUEUE_EXIT_CODE


@dataclass
class Job:
    stage: str
    cell: int | None
    label: str
    log: Path


def _jobs(plan: Plan) -> list[Job]:
    logs = Path(plan.out_dir) / "logs"
    jobs = []
    for stage in plan.order():
        if stage.cells:
            for i, cell in enumerate(stage.cells):
                if not cell_done(plan, stage, cell):
                    jobs.append(Job(stage.name, i, f"{stage.name}@{cell}",
                                    logs / f"{slug(stage.name)}@{slug(cell)}.log"))
        elif not is_done(plan, stage):
            jobs.append(Job(stage.name, None, stage.name, logs / f"{slug(stage.name)}.log"))
    return jobs


def run_local(plan: Plan, plan_path: Path, parallel: int = 1, echo: bool = True,
              stream: bool = False) -> int:
    """Run every job that is not done; returns 0 when all succeeded, else 1. ``stream``
    (one job at a time) also shows each job's output — progress bars included — live."""
    stream = stream and parallel == 1
    jobs = _jobs(plan)
    skipped = len(plan.stages) - len({j.stage for j in jobs})
    print(f"[pipeline] {len(jobs)} job(s) to run, {skipped} stage(s) done already", flush=True)
    try:
        failed = _run_jobs(plan, plan_path, jobs, parallel, echo, stream)
    except KeyboardInterrupt:
        return _interrupted()
    if failed:
        print(f"[pipeline] failed or blocked: {', '.join(sorted(failed))}; completed stages "
              "are kept: fix the cause and rerun the same command", file=sys.stderr)
        return 1
    print(f"[pipeline] all stages done: {plan.out_dir}", flush=True)
    return 0


def _run_jobs(plan: Plan, plan_path: Path, jobs: list[Job], parallel: int, echo: bool,
              stream: bool) -> set[str]:
    """Start each job once its dependencies are done; returns the stages that failed or were
    blocked by a failure. On Ctrl-C (which the jobs got too) it waits for the running jobs to
    end — training saves first — unless Ctrl-C comes again."""
    runner = _Runner(plan, plan_path, jobs, parallel, echo, stream)
    try:
        while runner.pending or runner.running:
            runner.start_ready()
            runner.collect_ended()
            time.sleep(0.2)
    except KeyboardInterrupt:
        try:
            for proc in runner.running:
                proc.wait()
        except KeyboardInterrupt:
            pass
        raise
    return runner.failed


class _Runner:
    """The local executor's bookkeeping: what waits, what runs, what failed."""

    def __init__(self, plan: Plan, plan_path: Path, jobs: list[Job], parallel: int, echo: bool,
                 stream: bool):
        self.plan, self.plan_path, self.parallel = plan, plan_path, parallel
        self.echo, self.stream = echo, stream
        self.pending = list(jobs)
        self.running: dict[subprocess.Popen, tuple[Job, float]] = {}
        self.unfinished = {j.stage for j in jobs}  # stages with a job not yet succeeded
        self.failed: set[str] = set()
        self.remaining = {s: sum(j.stage == s for j in jobs) for s in self.unfinished}

    def start_ready(self) -> None:
        for job in list(self.pending):
            deps = self.plan.stages[job.stage].deps
            if any(d in self.failed for d in deps):
                self.pending.remove(job)
                self.failed.add(job.stage)
                print(f"[pipeline] {job.label}: blocked (a dependency failed)", flush=True)
            elif len(self.running) < self.parallel and not any(d in self.unfinished
                                                                for d in deps):
                self.pending.remove(job)
                proc = _start(job, self.plan_path, self.echo, self.stream)
                self.running[proc] = (job, time.monotonic())

    def collect_ended(self) -> None:
        for proc in [p for p in self.running if p.poll() is not None]:
            job, started = self.running.pop(proc)
            took = time.monotonic() - started
            if proc.returncode == 0:
                print(f"[pipeline] {job.label}: done in {took:.0f} s", flush=True)
                self.remaining[job.stage] -= 1
                if self.remaining[job.stage] == 0:
                    self.unfinished.discard(job.stage)
                continue
            self.failed.add(job.stage)
            what = ("stopped to be resumed" if proc.returncode == REQUEUE_EXIT_CODE
                    else "FAILED")
            print(f"[pipeline] {job.label}: {what} (exit {proc.returncode}) after "
                  f"{took:.0f} s; log: {job.log}", file=sys.stderr, flush=True)


def _interrupted() -> int:
    """Ctrl-C reached every job too: training jobs finish their step, save and exit 75."""
    print("\n[pipeline] interrupted: the running jobs got the signal too (training saves a "
          "checkpoint first); rerun the same command to go on from there", file=sys.stderr,
          flush=True)
    return 130


def _start(job: Job, plan_path: Path, echo: bool, stream: bool) -> subprocess.Popen:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "msm_megatron.cli", "pipeline-stage", str(plan_path), job.stage]
    if job.cell is not None:
        cmd += ["--cell-index", str(job.cell)]
    if echo:
        print(f"[pipeline] {job.label}: started; log {job.log}", flush=True)
    log = job.log.open("ab")
    if not stream:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    threading.Thread(target=_tee, args=(proc.stdout, log), daemon=True).start()
    return proc


def _tee(source, log) -> None:
    """Copy a job's output to its log and to the console as it comes (chunks, not lines:
    progress bars redraw with carriage returns)."""
    out = sys.stdout.buffer
    while chunk := source.read1(4096):
        log.write(chunk)
        log.flush()
        out.write(chunk)
        out.flush()
    log.close()
