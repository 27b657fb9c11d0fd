"""Megatron ``dist_checkpointing`` saves with Megatron's on-disk layout, crash-safe.

Layout (readable by Megatron tools)::

    <run_dir>/checkpoints/
        iter_0000020/                        torch_dist shards (*.distcp, .metadata) + metadata.json
            msm_meta.json                    versions, layout, data position, config
        latest_checkpointed_iteration.txt    written last, atomically

The "latest" marker is replaced (write-temp-then-rename) only after every rank finished writing
and ``msm_meta.json`` exists, so a kill at any moment during a save leaves the previous complete
checkpoint as "latest". ``torch_dist`` checkpoints are reshardable: a run saved at one TP/PP/DP
resumes at another (model and optimizer; the RNG state is only restored on the same layout).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from msm_megatron import faults
from msm_megatron.config import Config, ConfigError, to_dict
from msm_megatron.models.weights import SHARDING_METADATA, load_models, model_state
from msm_megatron.run_files import CONVERT_META, LATEST, iter_dir, latest_iteration
from msm_megatron.run_files import RUN_META as META


def _maybe_fault(point: str, iteration: int) -> None:
    """Crash and signal tests (tests/distributed/test_resume.py, test_stop_signals.py): see
    :mod:`msm_megatron.faults`."""
    rank = dist.get_rank()
    faults.kill_at(faults.TRAIN, f"{point}:{iteration}", rank)
    if rank == 0:
        faults.hold_at(f"{point}:{iteration}")


@dataclass
class TrainState:
    """Counters that define where training is; stored in every checkpoint."""

    iteration: int = 0
    consumed_samples: int = 0
    consumed_tokens: int = 0


def _layout() -> dict:
    from msm_megatron.distributed import ranks

    r = ranks()
    return {k: r[k] for k in ("world", "tp", "pp", "cp", "dp")}


def _rng_object(is_loading: bool):
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    state = {} if is_loading else {
        "torch": torch.get_rng_state(),
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    return ShardedObject(
        "rng_state", state,
        (ps.get_pipeline_model_parallel_world_size(), ps.get_tensor_model_parallel_world_size()),
        (ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank()),
        replica_id=ps.get_data_parallel_rank(with_context_parallel=True),
    )


def sharded_state(chunks, optimizer, scheduler, state: TrainState | None, is_loading: bool,
                  with_rng: bool = True, keep=None) -> dict:
    """The full sharded state dict (model chunks, optimizer, schedule, counters, RNG).

    ``keep(key)`` selects model entries (LoRA: adapters only, or everything but adapters).
    """
    sd = model_state(chunks, keep)
    if optimizer is not None:
        # Nested per-chunk dicts: chunk-local names repeat across virtual stages.
        model_sd = dict(sd)
        sd["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=is_loading,
                                                      metadata=SHARDING_METADATA)
    if scheduler is not None:
        sd["opt_param_scheduler"] = scheduler.state_dict()
    if state is not None:
        sd["train_state"] = vars(state).copy()
    if with_rng:
        sd["rng_state"] = _rng_object(is_loading)
    return sd


def _write_meta(path: Path, cfg: Config, state: TrainState) -> None:
    import megatron.core

    meta = {
        "iteration": state.iteration, "consumed_samples": state.consumed_samples,
        "consumed_tokens": state.consumed_tokens,
        "data_position": {"consumed_samples": state.consumed_samples, "seed": cfg.data.seed,
                          "prepared": cfg.data.prepared,
                          "mode": cfg.data.mode},
        "layout": _layout(), "time": time.time(),
        "versions": {"torch": torch.__version__, "megatron_core": megatron.core.__version__},
        "config": to_dict(cfg),
    }
    tmp = path / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, path / META)


def _publish(root: Path, iteration: int, keep_last: int | None) -> None:
    tmp = root / (LATEST + ".tmp")
    tmp.write_text(str(iteration))
    os.replace(tmp, root / LATEST)
    if keep_last:
        done = sorted(p for p in root.glob("iter_*")
                      if (p / META).exists() and p.name <= iter_dir(root, iteration).name)
        for old in done[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)


class AsyncSaves:
    """Pending asynchronous saves; their "latest" marker moves only when every rank is done.

    ``poll()`` runs between steps (cheap, collective); ``wait()`` blocks at exit so a finished
    run never leaves a save in flight.
    """

    def __init__(self):
        from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

        self.queue = AsyncCallsQueue()

    def schedule(self, request) -> None:
        self.queue.schedule_async_request(request)

    def poll(self) -> list[int]:
        return self.queue.maybe_finalize_async_calls(blocking=False)

    def wait(self) -> None:
        self.queue.maybe_finalize_async_calls(blocking=True)

    def pending(self) -> int:
        return self.queue.get_num_unfinalized_calls()


def _finish_save(cfg: Config, state: TrainState, path: Path, root: Path) -> None:
    if dist.get_rank() == 0:
        _write_meta(path, cfg, state)
        _publish(Path(root), state.iteration, cfg.checkpoint.keep_last)


def save(cfg: Config, chunks, optimizer, scheduler, state: TrainState, root: Path,
         async_saves: AsyncSaves | None = None) -> Path:
    """Save ``state.iteration``; the "latest" marker moves to it once the save is complete.

    With ``async_saves`` the shards are written by a background process and this returns as
    soon as the state is staged; the marker moves in a later ``async_saves.poll()``/``wait()``.
    """
    from megatron.core import dist_checkpointing

    from msm_megatron._compat.checkpoint_writers import ensure_results_queue, shielded

    ensure_results_queue()  # its helper process, shielded from stop signals
    path = iter_dir(root, state.iteration)
    if dist.get_rank() == 0:
        if path.exists():  # leftover of an interrupted save of this same iteration
            shutil.rmtree(path)
        path.mkdir(parents=True)
    dist.barrier()
    sd = sharded_state(chunks, optimizer, scheduler, state, is_loading=False,
                       keep=model_keys(cfg))
    snapshot = TrainState(**vars(state))
    if async_saves is not None:
        request = dist_checkpointing.save(sd, str(path), async_sharded_save=True,
                                          async_strategy="mcore")
        def finalize() -> None:
            _finish_save(cfg, snapshot, path, root)
            _maybe_fault("after_save", snapshot.iteration)

        request.add_finalize_fn(finalize)
        with shielded():  # the writer process forked here inherits the blocked stop signals
            async_saves.schedule(request)
        _maybe_fault("async_save", state.iteration)
        return path
    dist_checkpointing.save(sd, str(path))
    _maybe_fault("during_save", state.iteration)
    dist.barrier()
    _finish_save(cfg, snapshot, path, root)
    dist.barrier()
    _maybe_fault("after_save", state.iteration)
    return path


def model_keys(cfg: Config):
    """Which model entries a run's checkpoints hold: all (None), or only LoRA adapters."""
    if not cfg.lora.rank:
        return None
    from msm_megatron.models.lora import is_adapter_key

    return is_adapter_key


def load(cfg: Config, chunks, optimizer, scheduler, path: Path) -> TrainState:
    """Restore model, optimizer, schedule and counters from a checkpoint directory."""
    from megatron.core import dist_checkpointing

    from msm_megatron._compat.megatron_optimizer import finish_loading, prepare_for_loading

    meta = json.loads((Path(path) / META).read_text())
    if optimizer is not None:
        _check_optimizer_format(meta, cfg, path)
        prepare_for_loading(optimizer)
    same_layout = meta["layout"] == _layout()
    keep = model_keys(cfg)
    sd = sharded_state(chunks, optimizer, scheduler, TrainState(), is_loading=True,
                       with_rng=same_layout, keep=keep)
    loaded = dist_checkpointing.load(sd, str(path))
    load_models(chunks, loaded, strict=keep is None, needed=keep)
    if optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])
        finish_loading(optimizer)
    if scheduler is not None:
        scheduler.load_state_dict(loaded["opt_param_scheduler"])
    if same_layout:
        _restore_rng(loaded["rng_state"])
    return TrainState(**loaded["train_state"])


def _changed(saved: dict, cfg: Config, section: str, keys: tuple[str, ...]) -> list[str]:
    current = getattr(cfg, section)
    return [f"{section}.{key}: {saved[section].get(key)} -> {getattr(current, key)}"
            for key in keys if saved[section].get(key) != getattr(current, key)]


def resume_changes(path: Path, cfg: Config, total_steps: int) -> list[str]:
    """Notes on schedule and data settings that differ from the checkpoint's run."""
    saved = json.loads((Path(path) / META).read_text())["config"]
    schedule = (_changed(saved, cfg, "optim", ("lr", "min_lr", "warmup_fraction", "warmup_steps",
                                               "decay_style", "weight_decay"))
                + _changed(saved, cfg, "train", ("steps", "tokens")))
    data = _changed(saved, cfg, "data", ("prepared", "weights", "mode", "packing", "seq_length",
                                         "seed"))
    notes = []
    if schedule:
        notes.append(f"resuming with a changed schedule ({'; '.join(schedule)}); the LR schedule "
                     f"follows the current config over {total_steps} steps")
    if data:
        notes.append(f"resuming with changed data settings ({'; '.join(data)}): samples from "
                     "here on are not those the original run would have seen")
    return notes


def _check_optimizer_format(meta: dict, cfg: Config, path: Path) -> None:
    saved = meta["config"]["parallel"]["distributed_optimizer"]
    current = cfg.parallel.distributed_optimizer
    if saved != current:
        raise ConfigError(
            f"{path}: saved with parallel.distributed_optimizer={saved}, this run has {current}. "
            "The optimizer state formats differ; resume with "
            f"parallel.distributed_optimizer={str(saved).lower()} (TP/PP/DP may change freely), or "
            "start a new run from these weights only with checkpoint.load=<this dir> "
            "checkpoint.resume=false in a fresh train.run_dir."
        )


def _restore_rng(rng: dict) -> None:
    from megatron.core import tensor_parallel

    torch.set_rng_state(rng["torch"])
    tensor_parallel.get_cuda_rng_tracker().set_states(rng["tracker"])


HF_INIT_DIR = "init_from_hf"
ARCH_FIELDS = ("arch", "vocab_size", "hidden_size", "intermediate_size", "num_layers",
               "num_attention_heads", "num_key_value_heads", "kv_channels", "tie_word_embeddings",
               "qkv_bias", "qk_norm", "rope_theta", "rope_scaling_factor", "rms_norm_eps")


def resolve_load(cfg: Config, run_dir: Path) -> Path:
    """The checkpoint directory ``checkpoint.load`` names, ready to load model weights from.

    Accepts a run's checkpoints root (its latest iteration), an ``iter_XXXXXXX`` directory, a
    converted checkpoint, or an HF model directory — converted once (rank 0, streaming) into
    ``<run_dir>/init_from_hf`` and reused on restarts. The stored model config must match
    ``cfg.model`` (clear error otherwise).
    """
    from msm_megatron.convert.engine import checkpoint_model_config, hf_to_megatron
    from msm_megatron.models.hf_config import load_hf_config
    from msm_megatron.run_files import is_hf_model_dir

    source = Path(cfg.checkpoint.load)
    if not source.exists():
        raise ConfigError(f"checkpoint.load={source} does not exist")
    if is_hf_model_dir(source):
        _check_model(load_hf_config(source), cfg, source)
        target = run_dir / HF_INIT_DIR
        done = target / CONVERT_META
        fresh = not done.exists() or json.loads(done.read_text())["source"] != str(
            source.resolve())
        if dist.get_rank() == 0 and fresh:
            shutil.rmtree(target, ignore_errors=True)
            hf_to_megatron(source, target)
        dist.barrier()
        return target
    found = latest_iteration(source)
    path = iter_dir(source, found) if found is not None else source
    if (path / META).exists() or (path / CONVERT_META).exists():
        _check_model(checkpoint_model_config(path), cfg, path)
    return path


def _check_model(saved, cfg: Config, source: Path) -> None:
    diffs = [f"{name}: {getattr(saved, name)} there, {getattr(cfg.model, name)} here"
             for name in ARCH_FIELDS if getattr(saved, name) != getattr(cfg.model, name)]
    if diffs:
        raise ConfigError(f"checkpoint.load={source} is a different model ({'; '.join(diffs)}). "
                          "Take the architecture from it with --model-from-hf <hf dir> or set "
                          "the model.* fields to match.")
