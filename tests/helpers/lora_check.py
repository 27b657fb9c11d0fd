"""LoRA checks that need a built model (run under torchrun by tests/distributed/test_lora.py).

Usage: ``python -m tests.helpers.lora_check config.yaml <out.json> [overrides...]``

1. With B = 0 a LoRA model's logits equal the (frozen) base model's (same seed, bit for bit).
2. After ``train.steps`` steps of training, every base weight is bit-identical to its initial
   value, the adapters moved, and the optimizer holds exactly the adapter parameters.
Writes the findings (rank 0) as JSON.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from msm_megatron.cli import resolve_config
from msm_megatron.config import apply_overrides
from msm_megatron.distributed import destroy_distributed, init_distributed
from msm_megatron.flops import lora_param_count
from msm_megatron.models.build import build_model_chunks
from msm_megatron.train.trainer import Trainer


def _logits(cfg, tokens):
    from megatron.core import tensor_parallel

    torch.manual_seed(cfg.train.seed)
    tensor_parallel.model_parallel_cuda_manual_seed(cfg.train.seed)
    (model,) = build_model_chunks(cfg)
    model.eval()
    # Frozen like the LoRA model's base: Megatron computes frozen linears through another
    # autograd function whose TP>1 results differ from the trainable one by fp32 rounding.
    for param in model.parameters():
        param.requires_grad_(False)
    positions = torch.arange(tokens.shape[1]).unsqueeze(0)
    with torch.no_grad():
        out = model(tokens, positions, None)
    return tensor_parallel.gather_from_tensor_model_parallel_region(out)


def main(argv: list[str]) -> int:
    config, out_path, overrides = argv[0], argv[1], argv[2:]
    cfg = resolve_config(config, overrides)
    base_cfg = apply_overrides(cfg, ["lora.rank=0"])
    init_distributed(cfg.parallel, cfg.train.seed)
    tokens = torch.randint(0, cfg.model.vocab_size, (1, 32), generator=torch.Generator()
                           .manual_seed(3))
    same = torch.equal(_logits(base_cfg, tokens), _logits(cfg, tokens))

    trainer = Trainer(cfg)
    model = trainer.chunks[0]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    adapters0 = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    trainer.fit()
    after = dict(model.named_parameters())
    base_changed = [n for n, t in before.items() if not torch.equal(t, after[n].detach())]
    b_moved = all(not torch.equal(t, after[n].detach()) for n, t in adapters0.items()
                  if n.endswith("_B"))
    opt_params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    local = sum(p.numel() for p in opt_params)
    counts = torch.tensor([local], dtype=torch.long)
    dist.all_reduce(counts)  # every rank's optimizer share; TP-replicated A/B count once each
    report = {
        "b0_logits_equal": same,
        "base_changed": base_changed,
        "b_moved": b_moved,
        "adapter_dtypes": sorted({str(p.dtype) for n, p in after.items() if "lora_" in n}),
        "trained_dtypes": sorted({str(p.dtype) for p in opt_params}),  # master copies
        "base_dtypes": sorted({str(p.dtype) for n, p in after.items() if "lora_" not in n
                               and "norm" not in n}),
        # fp32 training: the optimizer steps the adapters themselves (bf16: their fp32 masters)
        "optimizer_is_adapters": all(any(p is q for q in (after[n] for n in adapters0))
                                     for p in opt_params) if cfg.train.precision == "fp32"
        else None,
        "optimizer_numel_local": local,
        "expected_total": lora_param_count(cfg.model, cfg.lora.rank, cfg.lora.targets),
        "world": dist.get_world_size(),
    }
    if dist.get_rank() == 0:
        with open(out_path, "w") as handle:
            json.dump(report, handle)
    destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
