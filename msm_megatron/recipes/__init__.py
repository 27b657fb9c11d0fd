"""Named recipes: Python functions returning a fresh :class:`~msm_megatron.config.Config`.

One small module per family (``toy``, ``qwen3``, ``qwen2``, ``llama``) plus the paper's LoRA
recipes (``lora``); each exports a
``RECIPES`` dict and builds its configs through :func:`msm_megatron.recipes.stages.build_recipe`.

Example::

    from msm_megatron.recipes import get_recipe, list_recipes
    cfg = get_recipe("qwen3_32b_midtrain")
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from msm_megatron.config import Config, ConfigError
from msm_megatron.recipes import llama, lora, qwen2, qwen3, toy


def _registry() -> dict[str, Callable[[], Config]]:
    registry: dict[str, Callable[[], Config]] = {}
    for module in (toy, qwen3, qwen2, llama, lora):
        clash = registry.keys() & module.RECIPES.keys()
        if clash:
            raise RuntimeError(f"duplicate recipe names in {module.__name__}: {sorted(clash)}")
        registry.update(module.RECIPES)
    return registry


_RECIPES = _registry()


def list_recipes() -> list[str]:
    """All recipe names, sorted."""
    return sorted(_RECIPES)


def get_recipe(name: str) -> Config:
    """Build the named recipe (a new object each call).

    Raises:
        ConfigError: unknown name, with the closest names as a suggestion.
    """
    try:
        factory = _RECIPES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_RECIPES), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown recipe '{name}'.{hint} Available: {', '.join(list_recipes())}"
        ) from None
    return factory()
