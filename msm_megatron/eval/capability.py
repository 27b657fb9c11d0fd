"""Capability retention: lm-evaluation-harness tasks on an arm's export, when it is installed.

MSM should not cost general capability; this hook runs standard harness tasks (e.g.
``lm_eval_tasks=[mmlu,gsm8k,hellaswag]``) on the same HF export the misalignment sweep used,
through the harness's vLLM backend with ``runner=vllm`` (its ``hf`` backend otherwise), and puts
the headline metrics in the sweep report. ``lm_eval_include`` adds a folder of task YAMLs
(local datasets, no hub needed). Results per arm are cached in
``<out>/<arm>/capability.json`` and reused when the task list and limit are unchanged.

lm-evaluation-harness is optional (``pip install 'lm-eval[vllm]'``): asking for tasks without
it is a clear error before any model is loaded.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from msm_megatron.config import ConfigError


def check_installed(tasks: list[str]) -> None:
    if tasks and importlib.util.find_spec("lm_eval") is None:
        raise ConfigError(f"lm_eval_tasks={tasks} needs lm-evaluation-harness in this "
                          "environment: pip install 'lm-eval[vllm]' (or drop lm_eval_tasks)")


def headline_metrics(results: dict) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from the harness's ``results`` (numbers only, no aliases)."""
    out = {}
    for task, metrics in results.items():
        kept = {}
        for name, value in metrics.items():
            if name == "alias" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            kept[name.replace(",none", "")] = float(value)
        out[task] = kept
    return out


def run_capability(model_dir: str, tasks: list[str], out_file: Path, backend: str = "hf",
                   limit: int | None = None, include_path: str | None = None, seed: int = 0,
                   engine_args: dict | None = None) -> dict:
    """Harness ``tasks`` on ``model_dir`` (cached in ``out_file``); returns headline metrics.

    ``engine_args`` go to the harness model as ``model_args`` (for ``vllm``: tensor parallel
    size, memory share, dtype — the sweep passes its own so both engines are set up alike).
    """
    key = {"model": str(model_dir), "tasks": sorted(tasks), "limit": limit, "backend": backend}
    if out_file.is_file():
        cached = json.loads(out_file.read_text())
        if cached.get("key") == key:
            return cached["metrics"]
    check_installed(tasks)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    model_args = {"pretrained": str(model_dir), **(engine_args or {})}
    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    results = simple_evaluate(model=backend, model_args=model_args, tasks=list(tasks),
                              limit=limit, task_manager=manager, log_samples=False,
                              random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                              fewshot_random_seed=seed, batch_size=1 if backend == "hf" else "auto")
    if results is None:  # not the main rank of a multi-process harness run
        return {}
    metrics = headline_metrics(results["results"])
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps({"key": key, "metrics": metrics}, indent=2))
    return metrics
