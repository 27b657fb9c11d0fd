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
    pending = list(jobs)
    running: dict[subprocess.Popen, tuple[Job, float]] = {}
    unfinished = {j.stage for j in jobs}  # stages with a job not yet succeeded
    failed: set[str] = set()
    remaining = {s: sum(j.stage == s for j in jobs) for s in unfinished}
    while pending or running:
        for job in list(pending):
            deps = plan.stages[job.stage].deps
            if any(d in failed for d in deps):
                pending.remove(job)
                failed.add(job.stage)
                print(f"[pipeline] {job.label}: blocked (a dependency failed)", flush=True)
            elif len(running) < parallel and not any(d in unfinished for d in deps):
                pending.remove(job)
                running[_start(job, plan_path, echo, stream)] = (job, time.monotonic())
        for proc in [p for p in running if p.poll() is not None]:
            job, started = running.pop(proc)
            took = time.monotonic() - started
            if proc.returncode == 0:
                print(f"[pipeline] {job.label}: done in {took:.0f} s", flush=True)
                remaining[job.stage] -= 1
                if remaining[job.stage] == 0:
                    unfinished.discard(job.stage)
            else:
                failed.add(job.stage)
                print(f"[pipeline] {job.label}: FAILED (exit {proc.returncode}) after "
                      f"{took:.0f} s; log: {job.log}", file=sys.stderr, flush=True)
        time.sleep(0.2)
    if failed:
        print(f"[pipeline] failed or blocked: {', '.join(sorted(failed))}; completed stages "
              "are kept: fix the cause and rerun the same command", file=sys.stderr)
        return 1
    print(f"[pipeline] all stages done: {plan.out_dir}", flush=True)
    return 0


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
