"""Model weights in Megatron ``dist_checkpointing`` form: the model part of a checkpoint's
sharded state, and loading only the weights (or only the LoRA adapters) into model chunks.

Training (``train/checkpoint.py``: full saves and resumes) and conversion checks
(``convert/verify.py``) both load weights through here.
"""

from __future__ import annotations

from pathlib import Path

from msm_megatron.config import ConfigError

# The distributed optimizer's state is saved in a canonical per-parameter form that reloads at any
# TP/PP/DP ("fully_reshardable"); Megatron's older flattened format is no longer supported.
SHARDING_METADATA = {"distrib_optim_sharding_type": "fully_reshardable"}


def model_state(chunks, keep=None) -> dict:
    """Each model chunk's sharded state dict (``model`` or ``model0``, ``model1``, … with virtual
    pipeline stages); ``keep(key)`` selects entries (LoRA: adapters only, or all but them)."""
    from megatron.core.utils import unwrap_model

    sd: dict = {}
    for i, chunk in enumerate(unwrap_model(chunks)):
        key = "model" if len(chunks) == 1 else f"model{i}"
        sd[key] = chunk.sharded_state_dict(metadata=SHARDING_METADATA)
        if keep is not None:
            sd[key] = {k: v for k, v in sd[key].items() if keep(k)}
    return sd


def _not_adapter(key: str) -> bool:
    from msm_megatron.models.lora import is_adapter_key

    return not is_adapter_key(key)


def load_model_weights(chunks, path: Path) -> None:
    """Load only the model weights (fine-tuning from a checkpoint; counters start at zero).

    ``path`` may be a training checkpoint or one converted from HF (which has no
    ``_extra_state`` entries: those per-module extras, e.g. FP8 scaling history, start fresh).
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    check_vocab_rows(chunks, Path(path))
    sd = model_state(chunks, keep=_not_adapter)
    loaded, _, not_in_checkpoint = dist_checkpointing.load(
        sd, str(path), strict=StrictHandling.RETURN_UNEXPECTED)
    missing = sorted(k for k in not_in_checkpoint if "_extra_state" not in k)
    if missing:
        raise ConfigError(f"{path}: checkpoint lacks {len(missing)} tensors this model needs "
                          f"(e.g. {', '.join(missing[:4])}): is it a checkpoint of this "
                          "architecture (model.* settings, tied embeddings)?")
    load_models(chunks, loaded, strict=False, needed=_not_adapter)


def load_adapter_weights(chunks, path: Path) -> None:
    """Load only LoRA adapter tensors (a LoRA run's checkpoint) into ``chunks``."""
    from megatron.core import dist_checkpointing

    from msm_megatron.models.lora import is_adapter_key

    sd = model_state(chunks, keep=is_adapter_key)
    loaded = dist_checkpointing.load(sd, str(path))
    load_models(chunks, loaded, strict=False, needed=is_adapter_key)


def check_vocab_rows(chunks, path: Path) -> None:
    """A clear error when the checkpoint's padded vocabulary differs from this model's."""
    from megatron.core.utils import unwrap_model
    from torch.distributed.checkpoint import FileSystemReader

    if not (path / ".metadata").exists():
        raise ConfigError(f"{path}: not a Megatron checkpoint directory (no .metadata); for an HF "
                          "model directory use checkpoint.load=<hf dir> (converted on the fly)")
    stored = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    key = "embedding.word_embeddings.weight"
    first = unwrap_model(chunks)[0]
    if key in stored and getattr(first, "pre_process", False):
        rows = stored[key].size[0]
        mine = first.embedding.word_embeddings.num_embeddings  # global (all TP ranks)
        if rows != mine:
            raise ConfigError(
                f"{path}: embedding has {rows} rows, this model pads its vocabulary to "
                f"{mine} (model.vocab_size / "
                "make_vocab_size_divisible_by / parallel.tp): checkpoints reshard across TP "
                "1, 2, 4 and 8; for another TP re-convert the HF model or export and re-import")


def load_models(chunks, loaded: dict, strict: bool = True, needed=None) -> None:
    """Load each chunk's entries; ``needed(key)`` says which missing keys are errors."""
    from megatron.core.utils import unwrap_model

    for i, chunk in enumerate(unwrap_model(chunks)):
        result = chunk.load_state_dict(loaded["model" if len(chunks) == 1 else f"model{i}"],
                                       strict=strict)
        missing = [k for k in result.missing_keys if "_extra_state" not in k
                   and (needed is None or needed(k))] if result else []
        if missing:
            raise ConfigError(f"model weights missing after load: {missing[:4]}")
