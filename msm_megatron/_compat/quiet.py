"""Silence third-party start-up noise that says nothing actionable to our users.

Megatron-Core 0.19 warns, on every start, that apex/TE are missing (expected on CPU), that
``GPTModel`` is deprecated in favour of ``HybridModel``, that its own sync save goes through its
deprecated async writer, and that the rerun state machine was initialised implicitly; its
checkpoint loader triggers torch.distributed.checkpoint deprecation warnings. Set
``MSM_VERBOSE=1`` to see everything.
"""

from __future__ import annotations

import logging
import os
import warnings


def quiet_third_party() -> None:
    """Drop Megatron-Core's warnings and info logs unless ``MSM_VERBOSE`` is set."""
    if os.environ.get("MSM_VERBOSE"):
        return
    warnings.filterwarnings("ignore", module=r"megatron(\..*)?$")
    warnings.filterwarnings("ignore", message=r".*(Apex|Transformer Engine).*not installed")
    # torch.distributed.checkpoint warnings triggered by Megatron's checkpoint loader
    warnings.filterwarnings("ignore", module=r"torch\.distributed\.checkpoint(\..*)?$")
    warnings.filterwarnings("ignore", message=r".*deprecating ShardedTensor.*")
    logging.getLogger("megatron").setLevel(logging.ERROR)
