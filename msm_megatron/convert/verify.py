"""Check a conversion numerically: HF and Megatron forwards on the same tokens, in fp32.

Reports the max/mean absolute difference of the logits and of every decoder layer's output
(hidden states), and optionally whether greedy generation picks the same tokens. Runs on one
process (TP=PP=1) or under torchrun at any TP×PP (``msm convert verify --tp 2``): the Megatron
side is the real model at that layout, loaded through the same ``dist_checkpointing`` path as
training; the HF side runs on rank 0 only.

Megatron's forward goes through its pipeline schedule (``forward_only``), so PP stages exchange
activations exactly as in training; logits are gathered across TP and cut to the real vocab.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from msm_megatron.config import Config, ConfigError, ParallelConfig, TrainConfig


def _layer_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _hf_reference(hf_dir: Path, tokens: torch.Tensor, generate: int) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.eval()
    hidden: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_hook(
        lambda _m, _i, out, n=n: hidden.__setitem__(n, _layer_output(out).detach().clone()))
        for n, layer in enumerate(model.model.layers, start=1)]
    with torch.no_grad():
        logits = model(tokens).logits
        for hook in hooks:
            hook.remove()
        seq = tokens
        for _ in range(generate):
            nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    return {"logits": logits, "hidden": hidden, "generated": seq[0, tokens.shape[1]:].tolist()}


class _MegatronRunner:
    """A Megatron model at the current TP/PP, loaded from a checkpoint, run forward only."""

    def __init__(self, cfg: Config, ckpt_dir: Path):
        from megatron.core import parallel_state as ps

        from msm_megatron.models.build import build_model_chunks
        from msm_megatron.models.weights import load_model_weights

        self.cfg = cfg
        self.chunks = build_model_chunks(cfg)
        load_model_weights(self.chunks, ckpt_dir)
        for chunk in self.chunks:
            chunk.eval()
        self.last_stage = ps.is_pipeline_last_stage(ignore_virtual=True)
        self.hidden: dict[int, torch.Tensor] = {}
        for chunk in self.chunks:
            for layer in chunk.decoder.layers:
                layer.register_forward_hook(self._record(layer.layer_number))

    def _record(self, number: int):
        def hook(_module, _inputs, output):
            self.hidden[number] = _layer_output(output).detach().transpose(0, 1).clone()
        return hook

    def logits(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Full-vocab logits [b, s, vocab] on the last pipeline stage (None elsewhere)."""
        from megatron.core.pipeline_parallel import get_forward_backward_func
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        def step(data_iterator, model):
            batch = next(data_iterator)
            positions = torch.arange(batch.shape[1]).unsqueeze(0).expand_as(batch)
            return model(batch, positions, None), lambda out, non_loss_data=False: out

        iters = [iter([tokens]) for _ in self.chunks]
        with torch.no_grad():
            out = get_forward_backward_func()(
                forward_step_func=step, data_iterator=iters if len(iters) > 1 else iters[0],
                model=self.chunks, num_microbatches=1, seq_length=tokens.shape[1],
                micro_batch_size=tokens.shape[0], forward_only=True, collect_non_loss_data=True)
        if not self.last_stage:
            return None
        full = gather_from_tensor_model_parallel_region(out[0])
        return full[..., : self.cfg.model.vocab_size].float()


def _stats(a: torch.Tensor, b: torch.Tensor) -> dict:
    diff = (a.float() - b.float()).abs()
    return {"max_abs": diff.max().item(), "mean_abs": diff.mean().item()}


def verify(hf_dir: str | Path, ckpt_dir: str | Path, num_tokens: int = 32,
           prompt: str | None = None, generate: int = 0, tp: int = 1, pp: int = 1,
           tolerance: float = 1e-4, seed: int = 0) -> dict | None:
    """Compare HF and Megatron forwards; returns the report on rank 0 (None on other ranks).

    Args:
        hf_dir: the HF model directory.
        ckpt_dir: the Megatron checkpoint (converted or trained).
        num_tokens: length of the random token sequence (when no ``prompt``).
        prompt: text to tokenize with the HF directory's tokenizer instead of random tokens.
        generate: greedy tokens to generate with both models and compare (0 = skip).
        tp, pp: Megatron layout; must equal the torchrun world size (1 without torchrun).
        tolerance: ``passed`` is true when the max logit difference is at most this.
        seed: seed of the random tokens.
    """
    from msm_megatron.convert.engine import checkpoint_model_config
    from msm_megatron.distributed import free_port, init_distributed
    from msm_megatron.models.hf_config import load_hf_config

    hf_dir, ckpt_dir = Path(hf_dir), Path(ckpt_dir)
    try:
        model = checkpoint_model_config(ckpt_dir)
    except ConfigError:  # a bare Megatron checkpoint: the HF side describes the model
        model = load_hf_config(hf_dir)
    if "RANK" not in os.environ:
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    cfg = Config(model=model, parallel=ParallelConfig(tp=tp, pp=pp),
                 train=TrainConfig(precision="fp32", global_batch_size=1))
    init_distributed(cfg.parallel, seed)
    rank0 = dist.get_rank() == 0
    if prompt is not None:
        from transformers import AutoTokenizer

        ids = AutoTokenizer.from_pretrained(hf_dir)(prompt)["input_ids"]
        tokens = torch.tensor([ids])
    else:
        gen = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, model.vocab_size, (1, num_tokens), generator=gen)
    runner = _MegatronRunner(cfg, ckpt_dir)
    logits = runner.logits(tokens)
    hidden_here = dict(runner.hidden)  # before generation steps overwrite them
    generated = []
    seq = tokens
    for _ in range(generate):
        step_logits = runner.logits(seq)
        box = [int(step_logits[0, -1].argmax()) if step_logits is not None else None]
        dist.broadcast_object_list(box, src=dist.get_world_size() - 1)  # a last-stage rank
        generated.append(box[0])
        seq = torch.cat([seq, torch.tensor([[box[0]]])], dim=1)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, {"hidden": hidden_here, "logits": logits})
    if not rank0:
        return None
    hidden = {n: h for part in gathered for n, h in part["hidden"].items()}
    meg_logits = next(p["logits"] for p in gathered if p["logits"] is not None)
    ref = _hf_reference(hf_dir, tokens, generate)
    report = {
        "tokens": tokens.shape[1], "tp": tp, "pp": pp, "arch": model.arch,
        "logits": _stats(meg_logits, ref["logits"]),
        "layers": [{"layer": n, **_stats(hidden[n], ref["hidden"][n])} for n in sorted(hidden)],
    }
    if generate:
        report["greedy"] = {"hf": ref["generated"], "megatron": generated,
                            "match": ref["generated"] == generated}
    report["passed"] = (report["logits"]["max_abs"] <= tolerance
                        and report.get("greedy", {}).get("match", True))
    return report


def format_report(report: dict) -> str:
    """Human-readable summary of :func:`verify`'s report."""
    lines = [f"{report['arch']} tp={report['tp']} pp={report['pp']}, {report['tokens']} tokens",
             f"logits      max |Δ| {report['logits']['max_abs']:.3e}   "
             f"mean |Δ| {report['logits']['mean_abs']:.3e}"]
    for layer in report["layers"]:
        lines.append(f"layer {layer['layer']:>3}   max |Δ| {layer['max_abs']:.3e}   "
                     f"mean |Δ| {layer['mean_abs']:.3e}")
    if "greedy" in report:
        g = report["greedy"]
        detail = "" if g["match"] else f" (hf {g['hf']} vs megatron {g['megatron']})"
        lines.append(f"greedy {len(g['hf'])} tokens: {'match' if g['match'] else 'DIFFER'}"
                     + detail)
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)
