"""The conversion engine: HF directory ⇄ Megatron ``torch_dist`` checkpoint, streaming.

Both directions walk the architecture's mapping (:mod:`msm_megatron.weight_mapping`) one tensor
group at a time — one layer's fused QKV, one layer's ``[gate; up]`` … — so peak host memory is
the largest group, not the model. Every shape is checked against the model config before any
data is read, so a config that disagrees with the weights fails in seconds with the tensor, file
and config fields named.

A converted Megatron directory holds, besides the checkpoint itself, ``msm_convert.json`` (the
model config, source, dtype) and ``hf_assets/`` (the source's config, generation config and
tokenizer files), which is what an export back to HF needs. Export of a trained run reads the
model config from the checkpoint's ``msm_meta.json`` and finds the HF assets by following the
run's ``checkpoint.load`` back to a converted directory (or takes them from ``--hf-assets``).
Exporting a whole run (its latest iteration, LoRA runs merged): :mod:`msm_megatron.convert.export`.

Examples::

    hf_to_megatron("/models/Qwen3-8B", "ckpt/qwen3_8b")          # then checkpoint.load=ckpt/...
    megatron_to_hf("runs/sft/checkpoints/iter_0000400", "runs/sft/hf/iter_0000400")
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from msm_megatron.config import ConfigError, ModelConfig
from msm_megatron.convert import arch_spec
from msm_megatron.convert.hf_io import (
    HFCheckpoint,
    PlannedTensor,
    SafetensorsStreamWriter,
    copy_assets,
    parse_size,
)
from msm_megatron.convert.megatron_io import MegatronCheckpoint, PlannedChunk, write_checkpoint
from msm_megatron.models.hf_config import hf_config_from_model, load_hf_config
from msm_megatron.models.vocab import padded_vocab_size
from msm_megatron.run_files import (
    CONVERT_META,
    RUN_META,
    is_hf_model_dir,
    iter_dir,
    latest_iteration,
)
from msm_megatron.weight_mapping import (
    DIM_FIELDS,
    ArchSpec,
    Mapping,
    megatron_key,
    resolve,
)

ASSETS = "hf_assets"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HF_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tensor", disable=not enabled, leave=False)


def _check_hf_shapes(src: HFCheckpoint, arch: ArchSpec, model: ModelConfig) -> None:
    """Every tensor the mapping needs is present with the shape the config implies."""
    problems = []
    for mapping, layer in arch.groups(model):
        for name, shape in zip(arch.hf_names(mapping, layer), mapping.shapes, strict=True):
            if name not in src:
                problems.append(f"missing tensor {name}")
                continue
            expected = resolve(shape, model)
            found = src.shape(name)
            if found != expected:
                formula = " × ".join(f"{d}={DIM_FIELDS[d]}" for d in shape)
                problems.append(f"{name} (in {src.file_of(name)}) has shape {found}, but "
                                f"config.json implies {expected} ({formula})")
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ConfigError(f"{src.path}: the weights do not match config.json "
                          f"(model_type {model.arch}, {model.num_layers} layers, tie_word_"
                          f"embeddings={model.tie_word_embeddings}):\n  - "
                          + "\n  - ".join(problems[:8]) + more)


# Row-separable tensors (embeddings, LM head) are converted in blocks of at most this many bytes.
BLOCK_BYTES = 64 * 2**20


def row_blocks(rows: int, row_bytes: int, block_bytes: int = BLOCK_BYTES) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of at most ``block_bytes`` each (at least one row)."""
    step = max(1, block_bytes // max(1, row_bytes))
    return [(start, min(rows, start + step)) for start in range(0, rows, step)]


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _plan_chunks(arch: ArchSpec, model: ModelConfig, padded: int, dtype_of) -> list[PlannedChunk]:
    chunks = []
    for mapping, layer in arch.groups(model):
        shape = mapping.megatron_shape(model, padded)
        key, dtype = megatron_key(mapping, layer), dtype_of(mapping, layer)
        if layer is not None:
            chunks.append(PlannedChunk(key, (model.num_layers, *shape),
                                       (layer,) + (0,) * len(shape), (1, *shape), dtype))
            continue
        row_bytes = math.prod(shape[1:]) * _element_size(dtype)
        blocks = (row_blocks(shape[0], row_bytes) if mapping.row_separable
                  else [(0, shape[0])])
        for start, stop in blocks:
            chunks.append(PlannedChunk(key, shape, (start,) + (0,) * (len(shape) - 1),
                                       (stop - start, *shape[1:]), dtype))
    return chunks


def hf_to_megatron(hf_dir: str | Path, out_dir: str | Path, dtype: str | None = None,
                   progress: bool = True) -> Path:
    """Convert an HF model directory (safetensors) into a Megatron ``torch_dist`` checkpoint.

    Args:
        hf_dir: HF directory with ``config.json`` and ``model.safetensors`` or a sharded index.
        out_dir: new checkpoint directory (must not already hold a checkpoint).
        dtype: ``fp32``/``bf16``/``fp16`` to cast to; None keeps each tensor's stored dtype
            (bit-exact round trips).
        progress: show a progress bar.

    Returns:
        ``out_dir``, loadable with ``checkpoint.load=<out_dir>`` at any TP/PP.
    """
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    model = load_hf_config(hf_dir)
    arch = arch_spec(model.arch)
    src = HFCheckpoint(hf_dir)
    _check_hf_shapes(src, arch, model)
    if (out_dir / ".metadata").exists():
        raise ConfigError(f"{out_dir} already holds a checkpoint; choose a new directory")
    padded = padded_vocab_size(model, 1)
    cast = DTYPES[dtype] if dtype else None
    groups = {(megatron_key(m, layer), layer): (m, layer) for m, layer in arch.groups(model)}

    def dtype_of(mapping: Mapping, layer: int | None) -> torch.dtype:
        return cast or src.dtype(arch.hf_names(mapping, layer)[0])

    def produce(chunk: PlannedChunk) -> torch.Tensor:
        layer = chunk.offset[0] if chunk.key.startswith("decoder.layers.") else None
        mapping, layer = groups[(chunk.key, layer)]
        names = arch.hf_names(mapping, layer)
        if layer is None and mapping.row_separable:  # one row block; rows past HF's are zero
            start, stop = chunk.offset[0], chunk.offset[0] + chunk.shape[0]
            have = src.shape(names[0])[0]
            part = src.get(names[0], rows=(min(start, have), min(stop, have)))
            return mapping.to_megatron([part.to(cast) if cast is not None else part], model,
                                       stop - start)
        tensors = [src.get(name) for name in names]
        if cast is not None:
            tensors = [t.to(cast) for t in tensors]
        out = mapping.to_megatron(tensors, model, padded)
        return out.unsqueeze(0) if layer is not None else out

    chunks = _plan_chunks(arch, model, padded, dtype_of)
    started = time.time()
    with _progress(len(chunks), f"HF → Megatron {hf_dir.name}", progress) as bar:
        write_checkpoint(out_dir, chunks, produce, on_chunk=lambda _: bar.update())
    copy_assets(hf_dir, out_dir / ASSETS)
    meta = {"kind": "converted from HF", "source": str(hf_dir.resolve()),
            "model": asdict(model), "dtype": dtype or "as stored",
            "padded_vocab_size": padded, "seconds": round(time.time() - started, 2)}
    (out_dir / CONVERT_META).write_text(json.dumps(meta, indent=2))
    return out_dir


def checkpoint_model_config(ckpt_dir: str | Path) -> ModelConfig:
    """The model config stored with a checkpoint (trained run or converted directory)."""
    ckpt_dir = Path(ckpt_dir)
    for name, pick in ((RUN_META, lambda m: m["config"]["model"]),
                       (CONVERT_META, lambda m: m["model"])):
        if (ckpt_dir / name).exists():
            return ModelConfig(**pick(json.loads((ckpt_dir / name).read_text())))
    raise ConfigError(f"{ckpt_dir}: no {RUN_META} or {CONVERT_META} to read the model config "
                      "from; pass the model's HF config.json with --hf-assets")


def find_hf_assets(ckpt_dir: Path) -> Path | None:
    """Where the HF config/tokenizer files for a checkpoint are: its own ``hf_assets/``, else
    what its run started from (``checkpoint.load``: an HF directory, a converted checkpoint or
    an earlier run, followed back), else ``model.hf_path``."""
    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / ASSETS).is_dir():
        return ckpt_dir / ASSETS
    if not (ckpt_dir / RUN_META).exists():
        return None
    config = json.loads((ckpt_dir / RUN_META).read_text())["config"]
    start = config.get("checkpoint", {}).get("load")
    if start and Path(start).exists():
        start = Path(start)
        if is_hf_model_dir(start):
            return start
        found = latest_iteration(start)
        found = find_hf_assets(iter_dir(start, found) if found is not None else start)
        if found:
            return found
    hf_path = config.get("model", {}).get("hf_path")
    if hf_path and (Path(hf_path) / "config.json").exists():
        return Path(hf_path)
    return None


def _check_megatron_shapes(ckpt: MegatronCheckpoint, arch: ArchSpec, model: ModelConfig) -> None:
    stored = ckpt.tensors()
    problems = []
    for mapping, layer in arch.groups(model):
        if layer not in (None, 0):
            continue
        key = megatron_key(mapping, layer)
        if key not in stored:
            problems.append(f"missing tensor {key}")
            continue
        found = ckpt.shape(key)
        expected = mapping.megatron_shape(model, found[0])  # vocab rows: as padded when saved
        if layer is not None:
            expected = (model.num_layers, *expected)
        if mapping.shapes[0][:1] == ("vocab",) and found[0] < model.vocab_size:
            problems.append(f"{key} has {found[0]} rows < vocab_size {model.vocab_size}")
        elif found != expected:
            problems.append(f"{key} has shape {found}, the model config implies {expected}")
    if problems:
        raise ConfigError(f"{ckpt.path}: the checkpoint does not match its model config "
                          f"({model.arch}, {model.num_layers} layers, tie_word_embeddings="
                          f"{model.tie_word_embeddings}):\n  - " + "\n  - ".join(problems))


def _hf_config_json(model: ModelConfig, assets: Path | None, dtype: torch.dtype) -> dict:
    base = {}
    if assets is not None and (assets / "config.json").exists():
        base = json.loads((assets / "config.json").read_text())
    base.pop("rope_parameters", None)  # superseded by the modelled rope fields below
    base.update(hf_config_from_model(model))
    base["torch_dtype"] = HF_DTYPE_NAMES[dtype]
    return base


def megatron_to_hf(ckpt_dir: str | Path, out_dir: str | Path, dtype: str | None = None,
                   hf_assets: str | Path | None = None, max_shard_size: str | int = "5GB",
                   model: ModelConfig | None = None, progress: bool = True) -> Path:
    """Convert a Megatron checkpoint (any TP/PP it was saved with) into an HF directory.

    Args:
        ckpt_dir: an ``iter_XXXXXXX`` directory of a run, or a converted checkpoint.
        out_dir: the HF directory to write (sharded safetensors + index, ``config.json``,
            ``generation_config.json`` and tokenizer files when the assets have them).
        dtype: ``bf16``/``fp32``/``fp16``; None keeps the checkpoint's dtype.
        hf_assets: HF model or tokenizer directory whose config/tokenizer files to use (its
            ``config.json``, if any, is the base of the exported one); found automatically for
            converted checkpoints and runs that started from an HF model.
        max_shard_size: shard size limit, as in ``save_pretrained`` (``"5GB"``).
        model: model config, when the checkpoint carries none.
        progress: show a progress bar.
    """
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    ckpt = MegatronCheckpoint(ckpt_dir)
    if hf_assets is not None:
        assets = Path(hf_assets)
        if not assets.is_dir():
            raise ConfigError(f"--hf-assets {assets}: not a directory (expected an HF model or "
                              "tokenizer directory)")
    else:
        assets = find_hf_assets(ckpt_dir)
    if model is None:
        has_meta = (ckpt_dir / RUN_META).exists() or (ckpt_dir / CONVERT_META).exists()
        from_assets = assets is not None and (assets / "config.json").exists()
        model = (load_hf_config(assets) if from_assets and not has_meta
                 else checkpoint_model_config(ckpt_dir))
    arch = arch_spec(model.arch)
    _check_megatron_shapes(ckpt, arch, model)
    groups = arch.groups(model)
    cast = DTYPES[dtype] if dtype else None

    plan = []
    for mapping, layer in groups:
        stored_dtype = ckpt.dtype(megatron_key(mapping, layer))
        for name, shape in zip(arch.hf_names(mapping, layer), mapping.shapes, strict=True):
            plan.append(PlannedTensor(name, resolve(shape, model), cast or stored_dtype))
    out_dir.mkdir(parents=True, exist_ok=True)

    def pieces(bar):  # (HF name, tensor or row block), in plan order, one group at a time
        for mapping, layer in groups:
            key, names = megatron_key(mapping, layer), arch.hf_names(mapping, layer)
            if layer is None and mapping.row_separable:  # in row blocks, HF rows only
                rows, cols = resolve(mapping.shapes[0], model)[0], ckpt.shape(key)[1:]
                row_bytes = math.prod(cols) * _element_size(ckpt.dtype(key))
                for start, stop in row_blocks(rows, row_bytes):
                    part = ckpt.read(key, rows=(start, stop))
                    yield names[0], part.to(cast) if cast is not None else part
            else:
                outs = mapping.to_hf(ckpt.read(key, layer), model)
                for name, out in zip(names, outs, strict=True):
                    yield name, out.to(cast) if cast is not None else out
            bar.update()

    writer = SafetensorsStreamWriter(out_dir, plan, parse_size(max_shard_size))
    with _progress(len(groups), f"Megatron → HF {ckpt_dir.name}", progress) as bar:
        writer.write_all(pieces(bar))
    if assets is not None:
        copy_assets(assets, out_dir, skip=("config.json",))
    config = _hf_config_json(model, assets, plan[0].dtype)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir
