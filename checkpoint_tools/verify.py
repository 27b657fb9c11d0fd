#!/usr/bin/env python
"""HF vs Megatron fp32 logits, per-layer hidden states and greedy generation.

Usage: python checkpoint_tools/verify.py HF_DIR CKPT_DIR [--tp 2] [--pp 2] [--generate 16]
Same as `msm convert verify ...` (see `--help`).
"""

import sys

from msm_megatron.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "verify", *sys.argv[1:]]))
