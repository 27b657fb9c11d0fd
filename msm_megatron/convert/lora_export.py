"""Export a LoRA run: a PEFT adapter directory, or merged HF weights.

Examples::

    msm convert lora-export runs/aft/checkpoints/iter_0000400 out/aft-adapter
    msm convert lora-export runs/aft/checkpoints/iter_0000400 out/aft-merged --merged

**PEFT adapter** (``adapter_config.json`` + ``adapter_model.safetensors``): one ``lora_A`` /
``lora_B`` pair per HF module (``base_model.model.model.layers.<i>.self_attn.q_proj.lora_A
.weight`` …), fp32, read unsharded from the adapter-only checkpoint whatever TP/PP it was saved
with. It applies to the run's base model as-is: vLLM serves it with ``--enable-lora`` (our eval
runner takes the directory as an arm). A run whose base already has adapters merged into it
(``lora.on_load=merge``) has no plain-HF base to apply to: export it ``--merged``.

**Merged** weights: the base checkpoint converted to HF (``megatron_to_hf``, bit-exact), then each
adapter of the chain — merged ones first, then the run's own — added to its HF weight as
``W + (alpha/r)·B A`` in fp32 and stored in the base's dtype.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from msm_megatron.config import ConfigError
from msm_megatron.convert.megatron_io import MegatronCheckpoint
from msm_megatron.models.lora import FUSED, HF_MODULE
from msm_megatron.run_files import CONVERT_META, RUN_META, read_chain

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_MEGATRON_MODULE = {"linear_qkv": "self_attention", "linear_proj": "self_attention",
                    "linear_fc1": "mlp", "linear_fc2": "mlp"}


def _run_config(ckpt_dir: Path) -> dict:
    meta = Path(ckpt_dir) / RUN_META
    if not meta.exists():
        raise ConfigError(f"{ckpt_dir}: no {RUN_META} — pass an iter_XXXXXXX directory of a "
                          "LoRA training run")
    config = json.loads(meta.read_text())["config"]
    if not config.get("lora", {}).get("rank"):
        raise ConfigError(f"{ckpt_dir}: not a LoRA run (lora.rank is 0); use `msm convert "
                          "megatron-to-hf` or `msm convert export` for full checkpoints")
    return config


def read_adapters(ckpt_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The run's LoRA settings and its adapters by HF name (``model.layers.<i>.<module>.<proj>``
    → ``{"A": [r, in], "B": [out, r]}`` fp32, whole)."""
    ckpt_dir = Path(ckpt_dir)
    config = _run_config(ckpt_dir)
    lora, layers = config["lora"], config["model"]["num_layers"]
    ckpt = MegatronCheckpoint(ckpt_dir)
    adapters: dict = {}
    for fused, projections in FUSED.items():
        for proj in projections:
            if proj not in lora["targets"]:
                continue
            key = f"decoder.layers.{_MEGATRON_MODULE[fused]}.{fused}.lora_{proj}_"
            for layer in range(layers):
                name = f"model.layers.{layer}.{HF_MODULE[proj]}.{proj}"
                adapters[name] = {part: ckpt.read(key + part, layer=layer).float()
                                  for part in ("A", "B")}
    return lora, adapters


def _hf_source(base: str | None) -> str | None:
    """The HF model a base checkpoint was converted from (what vLLM needs), else the base."""
    meta = Path(base) / CONVERT_META if base else None
    if meta is not None and meta.exists():
        return json.loads(meta.read_text()).get("source", base)
    return base


def export_peft(ckpt_dir: str | Path, out_dir: str | Path, base_model: str | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` for the run's adapter."""
    from safetensors.torch import save_file


    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    chain = read_chain(ckpt_dir)
    if chain["merged"]:
        raise ConfigError(f"{ckpt_dir}: its base has {len(chain['merged'])} adapter(s) merged "
                          "into it (lora.on_load=merge), so a PEFT adapter would not apply to any "
                          "plain base model; export with --merged")
    lora, adapters = read_adapters(ckpt_dir)
    tensors = {}
    for name, parts in adapters.items():
        for part in ("A", "B"):
            tensors[f"base_model.model.{name}.lora_{part}.weight"] = parts[part].contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora["rank"],
        "lora_alpha": lora["alpha"], "lora_dropout": lora["dropout"], "bias": "none",
        "target_modules": sorted(lora["targets"]), "fan_in_fan_out": False,
        "init_lora_weights": True, "use_rslora": False, "use_dora": False,
        "modules_to_save": None, "inference_mode": True,
        "base_model_name_or_path": base_model or _hf_source(chain["base"]),
    }
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
    return out_dir


def export_merged(ckpt_dir: str | Path, out_dir: str | Path, dtype: str | None = None,
                  hf_assets: str | Path | None = None, progress: bool = True) -> Path:
    """HF weights of base + every adapter of the chain (merged ones, then this run's), in the
    base's dtype (or ``dtype``); config/tokenizer files as ``megatron_to_hf`` finds them."""
    from safetensors.torch import load_file, save_file

    from msm_megatron.convert.engine import megatron_to_hf

    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    chain = read_chain(ckpt_dir)
    if not chain["base"]:
        raise ConfigError(f"{ckpt_dir}: this LoRA run started from a random base (no "
                          "checkpoint.load), so there are no base weights to merge into")
    megatron_to_hf(chain["base"], out_dir, dtype=dtype, hf_assets=hf_assets, progress=progress)
    # Only the small A/B pairs are held; each fp64 delta exists while its weight is patched.
    pending: dict[str, list[tuple[float, dict]]] = {}
    for adapter_dir in [*chain["merged"], ckpt_dir]:
        lora, adapters = read_adapters(adapter_dir)
        scale = lora["alpha"] / lora["rank"]
        for name, parts in adapters.items():
            pending.setdefault(f"{name}.weight", []).append((scale, parts))
    for shard in sorted(out_dir.glob("*.safetensors")):
        tensors = load_file(str(shard))
        touched = [k for k in tensors if k in pending]
        for key in touched:
            delta = None
            for scale, parts in pending.pop(key):
                term = scale * (parts["B"].double() @ parts["A"].double())
                delta = term if delta is None else delta + term
            tensors[key] = (tensors[key].double() + delta).to(tensors[key].dtype)
        if touched:
            save_file(tensors, str(shard), metadata={"format": "pt"})
    if pending:
        raise ConfigError(f"{out_dir}: exported base lacks {sorted(pending)[:3]} …")
    return out_dir
