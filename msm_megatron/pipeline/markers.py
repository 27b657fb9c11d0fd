"""Completion markers: ``<out_dir>/markers/<stage>.json`` (one per array cell for arrays),
written by the job itself after its command succeeded, holding the stage's hash; it also points
``<out_dir>/latest/<stage>`` at the stage's output directory.

A stage is done when its marker (every cell's, for an array) carries the stage's current hash;
a marker with another hash is a stage that must run again.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from msm_megatron.pipeline.plan import Plan, Stage, slug


def marker_path(plan: Plan, stage: Stage, cell: str | None = None) -> Path:
    name = slug(stage.name) + (f"@{slug(cell)}" if cell is not None else "")
    return Path(plan.out_dir) / "markers" / f"{name}.json"


def write_marker(plan: Plan, stage: Stage, cell: str | None = None) -> None:
    path = marker_path(plan, stage, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"stage": stage.name, "cell": cell, "hash": stage.hash, "out": stage.out,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "slurm_job": os.environ.get("SLURM_JOB_ID")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    # <out_dir>/latest/<stage> -> its current output (stable, readable paths)
    link = Path(plan.out_dir) / "latest" / slug(stage.name)
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp_link = link.with_name(f"{link.name}.{os.getpid()}.tmp")  # array cells race here
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(Path(stage.out).resolve())
    tmp_link.replace(link)


def cell_done(plan: Plan, stage: Stage, cell: str | None = None) -> bool:
    path = marker_path(plan, stage, cell)
    try:
        return json.loads(path.read_text()).get("hash") == stage.hash
    except (OSError, json.JSONDecodeError):
        return False


def is_done(plan: Plan, stage: Stage) -> bool:
    if stage.cells:
        return all(cell_done(plan, stage, c) for c in stage.cells)
    return cell_done(plan, stage)
