#!/usr/bin/env python
"""A trained run's checkpoint -> runs/<run>/hf/iter_N.

Usage: python checkpoint_tools/export.py RUN_DIR [--iter N] [--dtype bf16]
Same as `msm convert export ...` (see `--help`).
"""

import sys

from msm_megatron.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "export", *sys.argv[1:]]))
