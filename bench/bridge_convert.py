"""Run Megatron-Bridge's ``AutoBridge`` HF <-> Megatron checkpoint conversion on CPU.

This is the *peer* side of the conversion benchmark: ``bench/convert.py`` runs it in a separate
process, with the bridge virtualenv's python, and wraps the process to measure peak RSS.

Setup (once; idempotent, ~2 min, see the script for pinned versions)::

    bash bench/bridge_env.sh            # creates bench/.venv-bridge (git-ignored)

Usage (from the repository root)::

    bench/.venv-bridge/bin/python bench/bridge_convert.py --hf HF_DIR --megatron-out MEG_DIR
    bench/.venv-bridge/bin/python bench/bridge_convert.py \\
        --megatron MEG_DIR --hf-template HF_DIR --hf-out HF_OUT_DIR

The last stdout line is one JSON object::

    {"direction": "hf_to_megatron" | "megatron_to_hf", "seconds": S, "import_seconds": I}

``seconds`` is the wall time of the conversion proper (single-rank gloo process group set-up,
loading, converting, writing, tear-down); ``import_seconds`` is the time to import torch and
Megatron-Bridge, which is excluded from ``seconds``.

What it calls (Bridge's public API, as a user would, TP=PP=1, the checkpoint's own dtype):

* HF -> Megatron mirrors ``AutoBridge.import_ckpt`` step by step, because ``import_ckpt`` cannot
  be told to avoid Transformer Engine: ``AutoBridge.from_hf_pretrained`` ->
  ``to_megatron_provider(load_weights=True)`` -> set the provider's ``transformer_layer_spec`` to
  Bridge's own ``local_layer_spec`` (the default spec needs TE) and switch the kernel fusions off
  -> ``provide_distributed_model(wrap_with_ddp=False, use_cpu_initialization=True)`` ->
  ``save_megatron_model(..., low_memory_save=True)`` (``torch_dist`` format), all inside Bridge's
  ``temporary_distributed_context("gloo")`` (``provide_distributed_model`` would otherwise start
  NCCL). The spec and fusion settings are recorded in the checkpoint's ``run_config.yaml``.
* Megatron -> HF is exactly the documented ``AutoBridge.from_hf_pretrained(template)
  .export_ckpt(megatron_dir, hf_out)``; it rebuilds the model from ``run_config.yaml``, so
  ``--megatron`` must be a checkpoint written by Bridge (e.g. by the first direction).
  Weights stream into safetensors laid out like the template's.

Why the environment is special: megatron-bridge 0.6.2 declares Python >=3.12 and depends on
CUDA-only packages (transformer-engine, flashinfer, ...), so ``bench/bridge_env.sh`` installs it
with ``--no-deps --ignore-requires-python`` plus only the pure-Python packages its conversion and
checkpoint-saving imports need (``megatron.bridge.training`` pulls in nvidia-modelopt, datasets,
megatron-energon and tensorboard at import time). The remaining gaps are closed by
``bench/bridge_shims/bridge_cpu_shims.py``, which only this runner puts on ``sys.path``:

Import shims (``install()``):
  1. ``typing.override`` (3.12+) is imported by ``megatron.training.models`` -> alias
     ``typing_extensions.override`` on 3.11.
  2. ``megatron.core.transformer.moe.ops.paged_stash`` imports ``triton`` (CUDA MoE kernels) and is
     imported unconditionally by the pipeline schedules -> a stand-in module with the same names.
  3. ``megatron.bridge.peft.lora_layers`` imports ``transformer_engine.pytorch`` unconditionally
     (on the ``model_bridge -> peft_bridge`` import chain) -> that module alone runs with a local
     stand-in ``te``; no fake ``transformer_engine`` is visible to Megatron-Core.
Runtime shims (``enable_cpu_runtime()``, no-ops when CUDA is available): ``torch.cuda``'s
``get_rng_state`` (snapshotted into the checkpoint), ``synchronize`` (dist-checkpoint writer) and
``current_device`` (bookkeeping tensors in the dist-checkpoint save) are mapped to CPU.

Imports happen inside ``main()`` on purpose: Megatron's dist-checkpoint writer starts a
``spawn`` multiprocessing manager, which re-runs this file's top level; keeping the top level
light stops that helper from re-importing torch and Megatron.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SHIM_DIR = Path(__file__).resolve().parent / "bridge_shims"

# Kernel fusions that need TE/apex/CUDA; none of them affects the weights being converted.
CPU_FUSIONS_OFF = (
    "bias_activation_fusion",
    "bias_dropout_fusion",
    "apply_rope_fusion",
    "masked_softmax_fusion",
    "gradient_accumulation_fusion",
    "cross_entropy_loss_fusion",
)


def _import_bridge():
    """Install the shims and import torch + Megatron-Bridge; returns the modules used."""
    sys.path.insert(0, str(SHIM_DIR))
    import bridge_cpu_shims

    bridge_cpu_shims.install()
    import torch

    bridge_cpu_shims.enable_cpu_runtime()
    from megatron.bridge import AutoBridge
    from megatron.bridge.models.gpt_provider import local_layer_spec
    from megatron.bridge.training.model_load_save import temporary_distributed_context

    return torch, AutoBridge, local_layer_spec, temporary_distributed_context


def hf_to_megatron(hf_dir: str, out_dir: str, api) -> None:
    _, AutoBridge, local_layer_spec, temporary_distributed_context = api
    with temporary_distributed_context(backend="gloo"):
        bridge = AutoBridge.from_hf_pretrained(hf_dir)
        provider = bridge.to_megatron_provider(load_weights=True)
        provider.transformer_layer_spec = local_layer_spec
        for name in CPU_FUSIONS_OFF:
            setattr(provider, name, False)
        provider.finalize()
        model = provider.provide_distributed_model(wrap_with_ddp=False, use_cpu_initialization=True)
        has_tokenizer = any(
            (Path(hf_dir) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")
        )
        bridge.save_megatron_model(
            model,
            out_dir,
            hf_tokenizer_path=hf_dir if has_tokenizer else None,
            low_memory_save=True,  # what AutoBridge.import_ckpt uses
        )
        del model


def megatron_to_hf(megatron_dir: str, template_dir: str, out_dir: str, api) -> None:
    _, AutoBridge, _, _ = api
    bridge = AutoBridge.from_hf_pretrained(template_dir)
    bridge.export_ckpt(megatron_dir, out_dir, show_progress=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hf", help="HF checkpoint directory to import (HF -> Megatron)")
    p.add_argument("--megatron-out", help="output Megatron checkpoint directory")
    p.add_argument("--megatron", help="Bridge-written Megatron checkpoint to export (-> HF)")
    p.add_argument("--hf-template", help="HF directory with the config/tokenizer to export against")
    p.add_argument("--hf-out", help="output HF directory (safetensors)")
    args = p.parse_args(argv)
    to_megatron = bool(args.hf or args.megatron_out)
    to_hf = bool(args.megatron or args.hf_template or args.hf_out)
    if to_megatron == to_hf:
        p.error("give either --hf/--megatron-out or --megatron/--hf-template/--hf-out")
    if to_megatron and not (args.hf and args.megatron_out):
        p.error("HF -> Megatron needs --hf and --megatron-out")
    if to_hf and not (args.megatron and args.hf_template and args.hf_out):
        p.error("Megatron -> HF needs --megatron, --hf-template and --hf-out")

    t0 = time.perf_counter()
    api = _import_bridge()
    import_seconds = time.perf_counter() - t0

    t1 = time.perf_counter()
    if to_megatron:
        direction = "hf_to_megatron"
        hf_to_megatron(args.hf, args.megatron_out, api)
    else:
        direction = "megatron_to_hf"
        megatron_to_hf(args.megatron, args.hf_template, args.hf_out, api)
    seconds = time.perf_counter() - t1

    sys.stderr.flush()
    result = {
        "direction": direction,
        "seconds": round(seconds, 3),
        "import_seconds": round(import_seconds, 3),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
