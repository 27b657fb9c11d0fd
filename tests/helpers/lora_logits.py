"""Megatron logits of a LoRA run's model (base chain + adapters) on fixed tokens (for tests).

Usage: ``python -m tests.helpers.lora_logits config.yaml <iter dir> <tokens.pt> <out.pt>
[overrides...]`` — writes fp32 logits [tokens, vocab] (the unpadded vocabulary) on rank 0.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from msm_megatron.cli import resolve_config
from msm_megatron.distributed import destroy_distributed, init_distributed
from msm_megatron.models.build import build_model_chunks
from msm_megatron.models.weights import load_adapter_weights
from msm_megatron.run_files import read_chain
from msm_megatron.train import lora_state


def main(argv: list[str]) -> int:
    config, iter_dir, tokens_path, out_path, overrides = (argv[0], argv[1], argv[2], argv[3],
                                                          argv[4:])
    cfg = resolve_config(config, overrides)
    init_distributed(cfg.parallel, cfg.train.seed)
    chunks = build_model_chunks(cfg)
    lora_state.restore_base(chunks, read_chain(iter_dir))
    load_adapter_weights(chunks, iter_dir)
    (model,) = chunks
    model.eval()
    tokens = torch.load(tokens_path, weights_only=True)
    positions = torch.arange(tokens.shape[1]).unsqueeze(0)
    from megatron.core import tensor_parallel

    with torch.no_grad():
        logits = tensor_parallel.gather_from_tensor_model_parallel_region(
            model(tokens, positions, None))
    if dist.get_rank() == 0:
        torch.save(logits[0, :, :cfg.model.vocab_size].float().clone(), out_path)
    destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
