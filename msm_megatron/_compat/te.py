"""Whether Transformer Engine is usable in this process (without importing megatron)."""

from __future__ import annotations

import functools
import importlib.util


@functools.cache
def te_available() -> bool:
    """True when ``transformer_engine.pytorch`` imports (it needs CUDA)."""
    if importlib.util.find_spec("transformer_engine") is None:
        return False
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True
