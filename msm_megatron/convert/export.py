"""Export a trained run: ``runs/<run>/checkpoints/iter_N`` → ``runs/<run>/hf/iter_N``.

Example::

    export_run("runs/sft")                 # the latest iteration; what `msm convert export` runs
"""

from __future__ import annotations

from pathlib import Path

from msm_megatron.config import ConfigError
from msm_megatron.run_files import LATEST, is_adapter_checkpoint, iter_dir, latest_iteration


def export_run(run_dir: str | Path, iteration: int | None = None, out_dir: str | Path | None = None,
               dtype: str | None = None, hf_assets: str | Path | None = None,
               progress: bool = True) -> Path:
    """``runs/<run>/checkpoints/iter_N`` → ``runs/<run>/hf/iter_N`` (latest N by default).

    A LoRA run exports its base with every adapter of its chain merged in
    (:func:`msm_megatron.convert.lora_export.export_merged`).
    """
    run_dir = Path(run_dir)
    root = run_dir / "checkpoints"
    if iteration is None:
        iteration = latest_iteration(root)
        if iteration is None:
            raise ConfigError(f"{root}: no complete checkpoint (no {LATEST}); pass --iter N for "
                              "a specific one")
    source = iter_dir(root, iteration)
    if not source.is_dir():
        have = sorted(p.name for p in root.glob("iter_*"))
        raise ConfigError(f"{source} does not exist; this run has: {', '.join(have) or 'none'}")
    out = Path(out_dir) if out_dir else run_dir / "hf" / source.name
    if is_adapter_checkpoint(source):
        from msm_megatron.convert.lora_export import export_merged

        return export_merged(source, out, dtype=dtype, hf_assets=hf_assets, progress=progress)
    from msm_megatron.convert.engine import megatron_to_hf

    return megatron_to_hf(source, out, dtype=dtype, hf_assets=hf_assets, progress=progress)
