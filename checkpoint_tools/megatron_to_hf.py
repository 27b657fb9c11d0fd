#!/usr/bin/env python
"""Megatron checkpoint (any TP/PP) -> HF directory (sharded safetensors + index, config, tokenizer).

Usage: python checkpoint_tools/megatron_to_hf.py CKPT_DIR OUT [--dtype bf16] [--hf-assets HF_DIR]
Same as `msm convert megatron-to-hf ...` (see `--help`).
"""

import sys

from msm_megatron.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "megatron-to-hf", *sys.argv[1:]]))
