"""The CPU demo: the whole MSM pipeline on a toy Qwen3 (``examples/pipeline/toy.yaml``).

Run::

    msm demo                                   # about 4 minutes on 2 cores
    msm demo --nproc 2 parallel.tp=2           # training on two ranks, tensor parallel
    msm demo --llm-base-url http://127.0.0.1:8000/v1 --llm-model Qwen/Qwen3-32B

It runs ``msm pipeline examples/pipeline/toy.yaml`` with the local executor, under ``--out``:

0. with an OpenAI-compatible endpoint (``--llm-base-url``/``--llm-model`` or
   ``MSM_DEMO_LLM_BASE_URL``/``MSM_DEMO_LLM_MODEL``) it generates a small corpus and AFT chats
   from the example spec; otherwise it uses the bundled example corpus and chats;
1. trains a tiny Qwen-style BPE tokenizer with a Qwen3 chat template;
2. prepares the corpus and the AFT chats (the first 20, and all 40; no CoT; plus the
   instruction mix) as Megatron datasets;
3. midtrains the toy Qwen3 on the corpus (MSM);
4. fine-tunes each AFT set from the midtrained model (the MSM arms) and from the base model
   (the AFT-only arms);
5. exports every arm to HF, and checks one export against its Megatron checkpoint;
6. evaluates every arm on the ``quick`` agentic-misalignment preset with the HF runner —
   judged by the endpoint's model when one is configured (``--judge-base-url`` or the
   generation endpoint), else scored by the mechanical checks only, and labelled so —
   and writes the report and plots.

Extra arguments are training overrides for both stages (``train.steps=4``). Every stage is
resumable and skipped when done: a rerun of the same command does nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from msm_megatron.config import Config, apply_overrides, load_yaml
from msm_megatron.config_paths import resolve_override
from msm_megatron.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "examples" / "pipeline" / "toy.yaml"
LLM_ENV = ("MSM_DEMO_LLM_BASE_URL", "MSM_DEMO_LLM_MODEL")


def demo_experiment(out_dir: Path, nproc: int = 1, overrides: list[str] | None = None,
                    llm_base_url: str | None = None, llm_model: str | None = None,
                    judge_base_url: str | None = None, judge_model: str | None = None):
    """The toy experiment with the demo's choices applied (its paths are relative to the
    experiment file, ``out_dir`` to the current directory)."""
    from msm_megatron.pipeline.experiment import ExperimentConfig

    exp = load_yaml(EXPERIMENT, ExperimentConfig)
    exp = apply_overrides(exp, [f"out_dir={out_dir}"], relative_to=Path.cwd())
    for stage in (exp.midtrain, exp.sft):
        stage.overrides = [*stage.overrides, *(resolve_override(Config, o, Path.cwd())
                                               for o in overrides or [])]
        stage.resources.tasks_per_node = nproc
    base_url = llm_base_url or os.environ.get(LLM_ENV[0])
    model = llm_model or os.environ.get(LLM_ENV[1]) or "default"
    if base_url:
        exp.generation.enabled = True
        exp.generation.backend.base_url = base_url
        exp.generation.backend.model = model
        exp.generation.docs = ["docs.domains=3", "docs.subdomains_per_domain=2",
                               "docs.doc_types=4", "docs.ideas_per_type=3"]
        exp.generation.chats = ["chats.domains=4", "chats.questions_per_style=3",
                                "chats.target=60"]
    judge_url = judge_base_url or base_url
    if judge_url:
        exp.eval.overrides += [f"judge.base_url={judge_url}",
                               f"judge.model={judge_model or model}"]
    else:
        exp.eval.overrides += ["judge_mode=mechanical"]
    return exp


def run_demo(out_dir: Path, nproc: int = 1, overrides: list[str] | None = None,
             llm_base_url: str | None = None, llm_model: str | None = None,
             judge_base_url: str | None = None, judge_model: str | None = None) -> int:
    from msm_megatron.pipeline.checks import preflight
    from msm_megatron.pipeline.local import run_local

    out_dir = Path(out_dir).absolute()
    exp = demo_experiment(out_dir, nproc, overrides, llm_base_url, llm_model, judge_base_url,
                          judge_model)
    if exp.generation.enabled:
        print(f"[demo] generating the corpus and AFT chats with {exp.generation.backend.model} "
              f"at {exp.generation.backend.base_url}")
    if "judge_mode=mechanical" in exp.eval.overrides:
        print("[demo] no judge endpoint: the eval scores the mechanical checks only "
              "(--judge-base-url for the classifier verdict)")
    plan, _ = preflight(exp, "local", dry_run=False)
    plan_path = out_dir / "pipeline" / "plan.json"
    plan.save(plan_path)
    code = run_local(plan, plan_path, stream=True)
    if code:
        return code
    stages = plan.stages
    arm = next(name.split("/", 1)[1] for name in stages if name.startswith("sft/msm-"))
    _summarize({"midtraining (LM loss)": Path(stages["midtrain/default/s0"].out),
                f"SFT {arm} (packed, assistant-only)": Path(stages[f"sft/{arm}"].out)},
               out_dir / "loss.png")
    code = check_export(Path(stages[f"export/{arm}"].out), Path(stages[f"sft/{arm}"].out))
    if "report" in stages:  # written into the eval sweep's directory
        report_dir = Path(stages["report"].out)
        summary = json.loads((report_dir / "summary.json").read_text())
        print(f"[demo] eval scenarios: {summary['scenarios']['read_from']}; judge protocol "
              f"{summary['judge_protocol']} (scenarios.source=official reads the paper's; "
              "docs/eval.md)")
        print(f"[demo] eval report: {report_dir / 'report.md'} (plots: "
              "misalignment.png, scenarios.png, data_efficiency.png)")
    print(f"[demo] every stage's output: {out_dir / 'latest'}")
    return code


def check_export(hf_dir: Path, run_dir: Path) -> int:
    """transformers vs Megatron on the exported arm (logits and greedy tokens)."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        print("[demo] transformers not installed: skipping the HF-vs-Megatron logit check")
        return 0
    from msm_megatron.convert.verify import verify
    from msm_megatron.distributed import destroy_distributed
    from msm_megatron.train.checkpoint import iter_dir, latest_iteration

    ckpt = iter_dir(run_dir / "checkpoints", latest_iteration(run_dir / "checkpoints"))
    try:
        report = verify(hf_dir, ckpt, generate=4, tolerance=1e-4)
    finally:
        destroy_distributed()
    print(f"[demo] HF export {hf_dir}: transformers vs Megatron on 32 tokens: max |Δ logits| "
          f"{report['logits']['max_abs']:.1e}, greedy tokens "
          f"{'match' if report['greedy']['match'] else 'DIFFER'}")
    return 0 if report["passed"] else 1


def plot_losses(runs: dict[str, Path], out_png: Path) -> Path:
    """Loss curves of training runs as one PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(5 * len(runs), 3.5))
    axes = fig.subplots(1, len(runs))
    for ax, (title, run_dir) in zip(axes, runs.items(), strict=True):
        records = read_metrics(run_dir)
        steps = sorted(records)
        ax.plot(steps, [records[s]["loss"] for s in steps])
        ax.set(xlabel="step", ylabel="loss", title=title)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    return out_png


def _summarize(runs: dict[str, Path], png_path: Path) -> None:
    for title, run_dir in runs.items():
        if not (run_dir / "metrics.jsonl").exists():
            return
        records = read_metrics(run_dir)
        first, last = min(records), max(records)
        print(f"[demo] {title}: loss {records[first]['loss']:.3f} (step {first}) -> "
              f"{records[last]['loss']:.3f} (step {last}); checkpoints {run_dir / 'checkpoints'}")
    print(f"[demo] loss curves: {plot_losses(runs, png_path)}")
