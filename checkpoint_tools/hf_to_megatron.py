#!/usr/bin/env python
"""HF directory -> Megatron torch_dist checkpoint (loadable at any TP/PP).

Usage: python checkpoint_tools/hf_to_megatron.py HF_DIR OUT [--dtype bf16]
Same as `msm convert hf-to-megatron ...` (see `--help`).
"""

import sys

from msm_megatron.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "hf-to-megatron", *sys.argv[1:]]))
