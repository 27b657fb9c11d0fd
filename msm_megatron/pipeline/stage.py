"""What one job runs: ``msm pipeline-stage <plan.json> <stage> [--cell-index I]``.

It runs the stage's ``msm`` command (or built-in step) in this process and, when it succeeds,
writes the completion marker — only rank 0 of a multi-rank training job does. A stage that is
already done (same hash) returns at once, so a requeued or resubmitted job never redoes work.
Exit codes pass through: 75 from a preempted training run means "checkpoint saved, requeue me".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from msm_megatron.config import ConfigError
from msm_megatron.pipeline.markers import cell_done, write_marker
from msm_megatron.pipeline.plan import Plan, Stage


def _rank() -> int:
    from msm_megatron.distributed import read_launch_env

    return read_launch_env().rank


def run_stage(plan_path: str | Path, name: str, run_argv: Callable[[list[str]], int],
              cell_index: int | None = None) -> int:
    """Run stage ``name`` of a saved plan (each of its cells, or cell ``cell_index``);
    ``run_argv`` runs one ``msm`` command line in this process (``msm_megatron.cli.main``)."""
    plan = Plan.load(Path(plan_path))
    if name not in plan.stages:
        raise SystemExit(f"error: {plan_path} has no stage {name!r}")
    stage = plan.stages[name]
    cells = list(stage.cells) or [None]
    if cell_index is not None:
        if not stage.cells or not 0 <= cell_index < len(cells):
            raise SystemExit(f"error: stage {name} has no cell {cell_index}")
        cells = [cells[cell_index]]
    for cell in cells:
        if cell_done(plan, stage, cell):
            print(f"[pipeline] {name}{'@' + cell if cell else ''}: done already", flush=True)
            continue
        print(f"[pipeline] {name}{'@' + cell if cell else ''}: running", flush=True)
        code = _execute(stage, cell, run_argv)
        if code != 0:
            return code
        if _rank() == 0:
            write_marker(plan, stage, cell)
    return 0


def _execute(stage: Stage, cell: str | None, run_argv: Callable[[list[str]], int]) -> int:
    if stage.kind == "tokenizer":
        from msm_megatron.data.toy_tokenizer import build_hf_tokenizer

        build_hf_tokenizer(Path(stage.out), template=stage.params["template"],
                           vocab_size=stage.params["vocab_size"], docs=10_000)
        return 0
    if stage.kind == "chat_tokenizer":
        return chat_tokenizer(stage)
    if stage.kind == "prepare_sft":
        return prepare_sft(stage)
    argv = stage.cells[cell] if cell is not None else list(stage.argv)
    if stage.kind in ("midtrain", "sft") and stage.ranks > 1 and not _launched():
        argv += ["--nproc", str(stage.ranks)]  # locally: torchrun; under srun: one per task
    return run_argv(argv)


def _launched() -> bool:
    """Started as one rank of many (torchrun or srun)?"""
    return "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def prepare_sft(stage: Stage) -> int:
    """The first ``size`` AFT chats (all for 0) plus the instruction mix, as one prepared
    dataset; ``keep_think`` false strips ``<think>`` (the no-CoT arm). The chats and the mix
    may be in any format ``msm data prepare`` reads (JSONL, parquet, HF datasets)."""
    from msm_megatron.data.sources import SourceFormatError, prepare_inputs, stage_inputs
    from msm_megatron.data.tokenizers import load_tokenizer

    p = stage.params
    out = Path(stage.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        staged, _ = stage_inputs([p["chats"]], out / "aft_source", "chats")
    except SourceFormatError as exc:
        raise SystemExit(f"error: AFT chats: {exc} (stage {stage.name})") from exc
    lines = [ln for f in staged for ln in f.read_text(encoding="utf-8").splitlines()
             if ln.strip()]
    if p["size"] > len(lines):
        raise SystemExit(f"error: aft_sizes asks for {p['size']} chats but {p['chats']} has "
                         f"{len(lines)}")
    subset = out / "aft.jsonl"
    subset.write_text("\n".join(lines[:p["size"] or len(lines)]) + "\n", encoding="utf-8")
    tokenizer = load_tokenizer(p["tokenizer"], end_of_turn_token=p.get("end_of_turn_token"))
    stats = prepare_inputs([str(subset), *p["mix"]], tokenizer,
                           out / "chats", kind="chats", keep_think=p["keep_think"])
    print(f"[pipeline] {out / 'chats'}: {stats['documents']} chats, {stats['tokens']} tokens",
          flush=True)
    return 0


def chat_tokenizer(stage: Stage) -> int:
    """The base's tokenizer and config files (no weights) with ``chat_template.jinja``, checked
    on a sample chat as the SFT data will render it
    (:func:`msm_megatron.pipeline.checks.sample_chat_problem`)."""
    from msm_megatron.convert.hf_io import copy_assets
    from msm_megatron.data.tokenizers import HF_TEMPLATE_FILE
    from msm_megatron.pipeline.checks import sample_chat_problem

    p = stage.params
    out = Path(stage.out)
    copy_assets(Path(p["tokenizer"]), out)
    template = Path(p["chat_template"]).read_text(encoding="utf-8")
    (out / HF_TEMPLATE_FILE).write_text(template, encoding="utf-8")
    problem = sample_chat_problem(out, None, p.get("end_of_turn_token"))
    if problem:
        raise ConfigError(f"chat_template {p['chat_template']}: {problem}")
    print(f"[pipeline] {out}: the tokenizer with {p['chat_template']}", flush=True)
    return 0
