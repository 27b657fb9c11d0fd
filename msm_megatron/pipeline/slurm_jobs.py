"""What Slurm knows about submitted jobs, from ``scontrol show job -o``.

No accounting database is needed (``sacct`` does not work on clusters without one): the
controller keeps a finished job for ``MinJobAge`` (300 s by default), long enough for a poll
loop; after that a job is unknown here and callers fall back to markers and logs.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

# PREEMPTED is not final: a requeueable job goes back to PENDING
TERMINAL_OK = frozenset({"COMPLETED"})
TERMINAL_BAD = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                          "BOOT_FAIL", "DEADLINE"})
KEY_PUNCTUATION = str.maketrans("", "", "/:_")  # scontrol keys: CPUs/Task, AllocNode:Sid
RUNNING = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"})


@dataclass
class JobTask:
    """One job, or one task of an array job (a pending array range is one record)."""

    job: str  # the id sbatch printed (the array's id for its tasks)
    task: str  # array task id ("3", or a pending range "0-1%1"); "" for a plain job
    state: str  # JobState: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ...
    reason: str = ""  # why pending or why it ended: Dependency, DependencyNeverSatisfied, ...
    nodes: str = ""  # NodeList (BatchHost while the list is not known)
    elapsed: str = ""  # RunTime, [D-]HH:MM:SS
    exit_code: str = ""  # ExitCode, "<code>:<signal>"
    partition: str = ""
    log: str = ""  # StdOut, with %j / %A / %a filled in

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL_OK or self.state in TERMINAL_BAD

    @property
    def label(self) -> str:
        return f"{self.job}_{self.task}" if self.task else self.job


def parse_fields(line: str) -> dict[str, str]:
    """``Key=value Key=value ...`` of one ``scontrol -o`` line; a word without ``=`` belongs to
    the previous value (values may contain spaces)."""
    fields: dict[str, str] = {}
    key = None
    for word in line.split():
        name, sep, value = word.partition("=")
        if sep and name and name.translate(KEY_PUNCTUATION).isalnum():
            key = name
            fields[key] = value
        elif key is not None:
            fields[key] += f" {word}"
    return fields


def task_from_fields(job: str, fields: dict[str, str]) -> JobTask:
    """A :class:`JobTask` from one parsed ``scontrol show job -o`` line."""
    nodes = fields.get("NodeList", "")
    if nodes in ("", "(null)"):
        nodes = fields.get("BatchHost", "")
    return JobTask(job=job, task=fields.get("ArrayTaskId", ""), state=fields.get("JobState", ""),
                   reason=fields.get("Reason", ""), nodes=nodes,
                   elapsed=fields.get("RunTime", ""), exit_code=fields.get("ExitCode", ""),
                   partition=fields.get("Partition", ""), log=fields.get("StdOut", ""))


def show_jobs(jobs: list[str]) -> dict[str, list[JobTask]]:
    """Job id -> its records (one per array task); ids the controller no longer knows (purged,
    or never existed) are absent. Needs ``scontrol`` on PATH; without it nothing is known."""
    found: dict[str, list[JobTask]] = {}
    for job in dict.fromkeys(j for j in jobs if j):
        try:
            done = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                                  text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode != 0:
            continue
        tasks = [task_from_fields(job, parse_fields(line)) for line in done.stdout.splitlines()
                 if line.strip()]
        tasks = [t for t in tasks if t.state]
        if tasks:
            found[job] = tasks
    return found


def cancel(job: str) -> None:
    """``scancel <job>`` (errors ignored: the job may have ended meanwhile)."""
    subprocess.run(["scancel", job], capture_output=True, timeout=60)
