#!/usr/bin/env python
"""Megatron checkpoint (any TP/PP) -> HF directory (sharded safetensors + index, config, tokenizer).

Usage: python checkpoint_tools/megatron_to_hf.py CKPT_DIR OUT [--dtype bf16] [--hf-assets HF_DIR]
Same as `msm convert megatron-to-hf ...` (see `--help`).
"""

import sys

from msm_megatron.convert.commands import tool_main

if __name__ == "__main__":
    sys.exit(tool_main("megatron-to-hf"))
