"""The on-disk layout of runs and checkpoints: names, markers and small metadata files.

One low module that training (``train/``), conversion (``convert/``) and the launchers all read,
so none of them imports another for a file name::

    <run_dir>/
      exit_status.json                    how the run last ended (EXIT_STATUS)
      checkpoints/
        latest_checkpointed_iteration.txt the newest complete iteration (LATEST)
        lora_base.json                    a LoRA run's base chain (LORA_CHAIN)
        iter_0000100/                     Megatron's naming (iter_dir)
          msm_meta.json                   config, counters, layout (RUN_META)
    <converted dir>/msm_convert.json      a checkpoint converted from HF (CONVERT_META)
    <hf dir>/config.json + *.safetensors  an HF model directory (is_hf_model_dir)

Pure standard library: the planners and launchers import it without torch.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

LATEST = "latest_checkpointed_iteration.txt"
RUN_META = "msm_meta.json"
CONVERT_META = "msm_convert.json"
LORA_CHAIN = "lora_base.json"
EXIT_STATUS = "exit_status.json"
REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL: "stopped to be resumed", what a requeue wrapper looks for


def iter_dir(ckpt_root: Path, iteration: int) -> Path:
    """``<root>/iter_0000100`` (Megatron's naming)."""
    return Path(ckpt_root) / f"iter_{iteration:07d}"


def latest_iteration(ckpt_root: Path) -> int | None:
    """Iteration named by the latest marker, or None when there is no complete checkpoint."""
    marker = Path(ckpt_root) / LATEST
    if not marker.exists():
        return None
    text = marker.read_text().strip()
    if not text.isdigit():
        raise ValueError(f"{marker}: expected an iteration number, found {text!r}; delete the file "
                         "or point checkpoint.load at a specific iter_XXXXXXX directory")
    return int(text)


def is_hf_model_dir(path: Path) -> bool:
    """An HF model directory: ``config.json`` and safetensors weights (not a Megatron dir)."""
    path = Path(path)
    return ((path / "config.json").exists() and not (path / ".metadata").exists()
            and any(path.glob("*.safetensors")))


# -- LoRA base chains (docs/lora.md) ------------------------------------------------------------


def chain_file(path: Path) -> Path:
    """``lora_base.json`` of a checkpoints root or of one of its ``iter_*`` directories."""
    path = Path(path)
    return path.parent / LORA_CHAIN if path.name.startswith("iter_") else path / LORA_CHAIN


def is_adapter_checkpoint(path: Path) -> bool:
    """Whether ``path`` (a checkpoints root or an ``iter_*`` directory) belongs to a LoRA run."""
    return chain_file(path).exists()


def read_chain(path: Path) -> dict:
    return json.loads(chain_file(path).read_text())


def write_chain_file(ckpt_root: Path, chain: dict) -> None:
    """Write ``lora_base.json`` atomically (one process: the caller picks the rank)."""
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_root / (LORA_CHAIN + ".tmp")
    tmp.write_text(json.dumps(chain, indent=2))
    tmp.replace(ckpt_root / LORA_CHAIN)


# -- how a run ended ----------------------------------------------------------------------------


def write_exit_status(run_dir: str | Path, exit_code: int, stopped_by: str | None,
                      iteration: int, started_at: int = 0) -> None:
    """Record how a run ended (rank 0): the step it started at, so a requeued attempt can tell
    that the previous one made no progress, and how and where it stopped."""
    path = Path(run_dir) / EXIT_STATUS
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"exit_code": exit_code, "stopped_by": stopped_by,
                               "iteration": iteration, "started_at": started_at,
                               "time": time.time()}))
    os.replace(tmp, path)


def read_exit_status(run_dir: str | Path) -> dict | None:
    """The last recorded end of a run in ``run_dir`` (None if there is none)."""
    path = Path(run_dir) / EXIT_STATUS
    return json.loads(path.read_text()) if path.exists() else None
