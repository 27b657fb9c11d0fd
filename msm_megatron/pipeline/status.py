"""Where every stage of a study stands: ``msm pipeline exp.yaml --status``, and what
``--wait`` reports while it polls.

A stage's state comes from three sources, in this order:

1. its completion marker (:mod:`~msm_megatron.pipeline.markers`): ``done``;
2. the job the Slurm ledger (``<out_dir>/pipeline/slurm_jobs.json``) records for the stage's
   current hash, as ``scontrol show job`` sees it: ``pending``, ``running``, ``failed`` (it
   ended without a marker: FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...) or ``cancelled``
   (by ``scancel``, or because a job it depends on failed);
3. a job the controller has forgotten (it keeps ended jobs ``MinJobAge``, 300 s by default)
   ended without a marker: ``failed`` when it wrote a log, else ``cancelled`` (it never ran).

A stage with no job for its current hash is ``not submitted``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from msm_megatron.pipeline.markers import is_done, marker_path
from msm_megatron.pipeline.plan import Plan, Stage
from msm_megatron.pipeline.slurm_jobs import RUNNING, TERMINAL_BAD, JobTask, show_jobs

LIVE_STATES = ("pending", "running")
NOTE_WIDTH = 100  # characters of the last log line in the --status table
SLURM_LINES = ("srun: ", "slurmstepd: ")  # what Slurm itself writes into a job's log


@dataclass
class StageStatus:
    """One row of ``--status``."""

    stage: str
    state: str  # done, pending, running, failed, cancelled, not submitted
    job: str = ""  # the job id (an array task's as <job>_<task> when one task failed)
    slurm_state: str = ""  # Slurm's word for it: FAILED, TIMEOUT, CANCELLED, ...
    nodes: str = ""
    elapsed: str = ""
    exit_code: str = ""  # "<code>:<signal>"
    partition: str = ""
    log: str = ""  # the log to read (the failed task's, for an array)
    note: str = ""  # the last non-empty log line, or why it waits / was cancelled


def ledger_path(plan: Plan) -> Path:
    """``<out_dir>/pipeline/slurm_jobs.json``: stage -> {job, hash, log} of its last job."""
    return Path(plan.out_dir) / "pipeline" / "slurm_jobs.json"


def read_ledger(plan: Plan) -> dict[str, dict]:
    try:
        return json.loads(ledger_path(plan).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def collect(plan: Plan, ledger: dict[str, dict] | None = None,
            every_job: bool = False) -> dict[str, StageStatus]:
    """Every stage's status (plan order), asking Slurm about the jobs of the stages not done
    (``every_job``: about every job, for the nodes and times of the done ones too)."""
    ledger = read_ledger(plan) if ledger is None else ledger
    done = {s.name: is_done(plan, s) for s in plan.order()}
    current = {s.name: ledger[s.name] for s in plan.order()
               if s.name in ledger and ledger[s.name].get("hash") == s.hash}
    jobs = show_jobs([e["job"] for name, e in current.items() if every_job or not done[name]])
    # read again after asking Slurm: a job writes its marker before it ends, so a job seen
    # ended has its marker by now, if it wrote one
    done = {s.name: done[s.name] or is_done(plan, s) for s in plan.order()}
    out = {}
    for stage in plan.order():
        entry = current.get(stage.name)
        tasks = [t for t in jobs.get(entry["job"], []) if is_ours(t, entry)] if entry else []
        out[stage.name] = _stage_status(plan, stage, done[stage.name], entry, tasks)
    for status in out.values():
        if status.state == "cancelled" and not status.note:
            status.note = _why_cancelled(plan, out, status.stage)
    return out


def is_ours(task: JobTask, entry: dict) -> bool:
    """The controller's job still is the one we submitted (job ids restart when a cluster's
    state is wiped): its log goes where ours would."""
    pattern = entry.get("log", "")
    return not pattern or not task.log or task.log.startswith(pattern.split("%", 1)[0])


def _stage_status(plan: Plan, stage: Stage, done: bool, entry: dict | None,
                  tasks: list[JobTask]) -> StageStatus:
    if entry is None:
        return StageStatus(stage.name, "done" if done else "not submitted",
                           job=_marker_job(plan, stage) if done else "")
    status = StageStatus(stage.name, "", job=entry["job"])
    if tasks:
        _fill_from_slurm(status, _focus(tasks))
    else:  # forgotten by the controller: its log, if it wrote one
        status.log = _newest(glob.glob(entry.get("log", "").replace("%j", entry["job"])
                                       .replace("%A", entry["job"]).replace("%a", "*")))
    status.state = "done" if done else _state(tasks, bool(status.log))
    if status.state not in ("pending", "cancelled") or status.log:
        status.note = last_line(status.log) or status.note
    return status


def _fill_from_slurm(status: StageStatus, focus: list[JobTask]) -> None:
    """Nodes, times, exit code, log and Slurm's reason from the records a row shows."""
    first = focus[0]
    status.slurm_state, status.exit_code, status.partition = (first.state, first.exit_code,
                                                              first.partition)
    status.nodes = ",".join(dict.fromkeys(t.nodes for t in focus if t.nodes))
    if status.nodes:  # a job that never ran has no time worth showing
        status.elapsed = max((t.elapsed for t in focus), key=_seconds)
    if first.task and first.state in TERMINAL_BAD and "-" not in first.task:
        status.job = first.label  # the failed array task: <job>_<task>
    status.log = _newest([t.log for t in focus])
    if first.state in ("PENDING", "CANCELLED"):
        status.note = _reason_note(first.reason)


def _state(tasks: list[JobTask], wrote_log: bool) -> str:
    if not tasks:  # the controller forgot it: it ended without a marker
        return "failed" if wrote_log else "cancelled"
    if any(t.state in RUNNING for t in tasks):
        return "running"
    if any(not t.ended for t in tasks):
        return "pending"  # PENDING, REQUEUED (a preempted job), SUSPENDED, ...
    states = {t.state for t in tasks}
    if states & (TERMINAL_BAD - {"CANCELLED"}):
        return "failed"
    return "cancelled" if "CANCELLED" in states else "failed"  # COMPLETED without a marker


def _focus(tasks: list[JobTask]) -> list[JobTask]:
    """The records a row shows: the failed tasks, else the running ones, else all."""
    bad = [t for t in tasks if t.state in TERMINAL_BAD - {"CANCELLED"}]
    cancelled = [t for t in tasks if t.state == "CANCELLED"]
    running = [t for t in tasks if t.state in RUNNING]
    return bad or running or [t for t in tasks if not t.ended] or cancelled or tasks


def _reason_note(reason: str) -> str:
    if reason in ("", "None"):
        return ""
    if reason == "DependencyNeverSatisfied":
        return ""  # explained by the failed stage (see _why_cancelled)
    return f"waiting: {reason}"


def _why_cancelled(plan: Plan, statuses: dict[str, StageStatus], name: str) -> str:
    """``because <stage> failed``: the failed stages upstream (Slurm may cancel a dependent
    before the jobs between it and the failure), else the Slurm reason (``scancel``)."""
    failed, seen = [], set()
    todo = list(plan.stages[name].deps)
    while todo:
        dep = todo.pop(0)
        if dep in seen or statuses[dep].state == "done":
            continue
        seen.add(dep)
        if statuses[dep].state == "failed":
            failed.append(dep)
        else:
            todo.extend(plan.stages[dep].deps)
    if failed:
        return f"because {', '.join(failed)} failed"
    return "by scancel, or its dependencies can never be satisfied"


def _marker_job(plan: Plan, stage: Stage) -> str:
    cells = list(stage.cells) or [None]
    try:
        record = json.loads(marker_path(plan, stage, cells[-1]).read_text())
    except (OSError, json.JSONDecodeError):
        return ""
    return str(record.get("slurm_job") or "")


def _seconds(elapsed: str) -> int:
    """``[D-]HH:MM:SS`` (or ``MM:SS``) in seconds; 0 when unreadable."""
    days, _, clock = elapsed.rpartition("-")
    try:
        seconds = int(days or 0) * 86400
        for part in clock.split(":"):
            seconds = seconds * 60 + int(part)
    except ValueError:
        return 0
    return seconds


def _newest(paths: list[str]) -> str:
    existing = [p for p in paths if p and os.path.isfile(p)]
    return max(existing, key=os.path.getmtime) if existing else ""


def _tail(path: str, size: int = 8192) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def failed_tasks(path: str) -> str:
    """Which tasks of a job step failed, and on which node, as ``srun`` wrote it into the log
    (``node2 task 1: Killed``); "" when it wrote none. Names the node of a multi-node failure."""
    found = re.findall(r"^srun: error: (\S+): tasks? ([\d\-,]+): (.+)$",
                       _tail(path, 65536) if path else "", flags=re.MULTILINE)
    return "; ".join(dict.fromkeys(f"{node} task {task}: {what.strip()}"
                                   for node, task, what in found))


def last_line(path: str, limit: int = 200) -> str:
    """The last non-empty line the stage wrote to its log (a progress bar's last redraw; not
    Slurm's own ``srun:`` / ``slurmstepd:`` lines after it), at most ``limit`` characters;
    "" when there is none."""
    if not path:
        return ""
    tail = _tail(path)
    lines = [ln.strip() for ln in tail.replace("\r", "\n").split("\n") if ln.strip()]
    own = [ln for ln in lines if not ln.startswith(SLURM_LINES)]
    return (own or lines or [""])[-1][:limit]


def format_status(plan: Plan, statuses: dict[str, StageStatus]) -> str:
    """The ``--status`` table: one row per stage, then a count per state."""
    width = max(len(name) for name in statuses)
    rows = [f"{'stage':<{width}}  {'state':<13} {'job':<10} {'nodes':<12} {'elapsed':>10}  "
            "last log line"]
    for s in statuses.values():
        rows.append(f"{s.stage:<{width}}  {s.state:<13} {s.job:<10} {s.nodes:<12} "
                    f"{s.elapsed:>10}  {s.note[:NOTE_WIDTH]}".rstrip())
    counts = {state: sum(s.state == state for s in statuses.values())
              for state in ("done", "running", "pending", "failed", "cancelled", "not submitted")}
    rows += ["", f"{plan.experiment} ({plan.out_dir}): "
             + ", ".join(f"{n} {state}" for state, n in counts.items() if n)]
    rows += [f"  {s.stage}: log {s.log}" for s in statuses.values()
             if s.state == "failed" and s.log]
    return "\n".join(rows)


def report_line(status: StageStatus) -> str:
    """How ``--wait`` announces a stage that ended: completed, or FAILED / CANCELLED with the
    job, its nodes and its log, or the stage whose failure cancelled it."""
    head = f"[pipeline] {status.stage}: job {status.job or '?'}"
    where = f" on {status.nodes}" if status.nodes else ""
    if status.state == "done":
        return f"{head} completed{where}" + (f" in {status.elapsed}" if status.elapsed else "")
    word = status.slurm_state if status.slurm_state not in ("", "COMPLETED") else (
        "FAILED" if status.state == "failed" else "CANCELLED")
    if status.state == "cancelled" and not status.log:
        return f"{head} {word} {status.note}".rstrip()
    code, _, signal = status.exit_code.partition(":")
    how = (f" (exit {code})" if code not in ("", "0") else
           f" (signal {signal})" if signal not in ("", "0") else "")
    line = f"{head} {word}{how}{where}; log: {status.log or 'none written'}"
    tasks = failed_tasks(status.log)
    return (line + (f"\n    failed tasks: {tasks}" if tasks else "")
            + (f"\n    last log line: {status.note}" if status.note else ""))


def print_status(plan: Plan) -> int:
    """``msm pipeline exp.yaml --status``: the table; exit 1 when a stage failed or was
    cancelled, else 0."""
    statuses = collect(plan, every_job=True)
    print(format_status(plan, statuses))
    if read_ledger(plan) and shutil.which("scontrol") is None:
        print("note: scontrol is not on PATH here, so Slurm was not asked: the states come "
              "from the markers and the logs (run this on the cluster's login node)")
    return 1 if any(s.state in ("failed", "cancelled") for s in statuses.values()) else 0
