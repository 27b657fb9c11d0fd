"""The ``msm`` command line. Subcommands are thin: they call library functions.

Examples::

    msm recipes                                           # list named recipes
    msm train qwen3_32b_midtrain --dry-run --world-size 16   # plan + memory estimate, no GPU
    msm train qwen3_toy_midtrain --nproc 2 parallel.tp=2      # after `msm demo` prepared data
    msm train runs/toy/config.yaml train.steps=100        # replay a saved run with overrides
    msm train qwen3_8b_midtrain --model-from-hf /models/Qwen3-8B --dry-run --world-size 8
    msm data prepare corpus.jsonl --tokenizer /models/Qwen3-8B --out runs/data/msm
    msm data prepare chats.jsonl --kind chats --tokenizer /models/Qwen3-8B --out runs/data/aft
    msm demo                                              # prepare -> toy midtrain -> packed SFT
    msm convert hf-to-megatron /models/Qwen3-8B ckpt/qwen3_8b   # see msm_megatron/convert/commands
    msm convert export runs/sft                           # latest checkpoint -> runs/sft/hf/iter_N
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from msm_megatron.config import Config, ConfigError, apply_overrides, load_config


def resolve_config(target: str, overrides: list[str], model_from_hf: str | None = None) -> Config:
    """A recipe name or a YAML path; its model replaced by an HF config if given; overrides.

    Paths come out absolute: a YAML's relative to its directory, a recipe's and the overrides'
    relative to the current directory (:func:`~msm_megatron.config.load_config`)."""
    from msm_megatron.recipes import get_recipe

    cfg = load_config(Config, target, named=get_recipe)
    if model_from_hf:
        import dataclasses

        from msm_megatron.models.hf_config import load_hf_config

        cfg = dataclasses.replace(cfg, model=load_hf_config(model_from_hf))
    return apply_overrides(cfg, overrides, relative_to=Path.cwd())


def cmd_train(args, argv: list[str]) -> int:
    cfg = resolve_config(args.config, args.overrides, args.model_from_hf)
    if args.dry_run:
        from msm_megatron.distributed import read_launch_env
        from msm_megatron.estimate import dry_run_report

        world = (args.world_size or cfg.parallel.world_size or args.nproc
                 or read_launch_env().world_size)
        report, problems = dry_run_report(cfg, world)
        print(report)
        if problems:
            print(f"error: config '{cfg.name}' fails {len(problems)} check(s) at world size "
                  f"{world} (listed above)", file=sys.stderr)
            return 2
        return 0
    if args.nproc and "RANK" not in os.environ:
        from msm_megatron._compat.te import te_available
        from msm_megatron.distributed import relaunch_local_ranks
        from msm_megatron.validate import validate

        validate(cfg, args.nproc, te_available())  # a layout Megatron refuses: before any rank
        return relaunch_local_ranks(args.nproc, argv)
    from msm_megatron.train.preemption import PreemptionHandler

    # first, before the slow imports: a stop signal at any moment ends in a save and exit 75
    signals = PreemptionHandler(cfg.checkpoint.exit_signals)
    from msm_megatron.distributed import destroy_distributed
    from msm_megatron.train.trainer import Trainer

    try:
        result = Trainer(cfg, signals=signals).fit()
    finally:
        signals.close()
        destroy_distributed()
    return result.exit_code


def cmd_recipes(args, argv: list[str]) -> int:
    from msm_megatron.recipes import list_recipes

    for name in list_recipes():
        print(name)
    return 0


def cmd_data_prepare(args, argv: list[str]) -> int:
    from msm_megatron.data.prepare import DataError
    from msm_megatron.data.sources import prepare_inputs
    from msm_megatron.data.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer, chat_template=args.chat_template,
                               eod_token=args.eod_token, end_of_turn_token=args.end_of_turn_token)
    try:
        stats = prepare_inputs(args.inputs, tokenizer, Path(args.out), kind=args.kind,
                               text_field=args.text_field, workers=args.workers,
                               skip_bad=args.skip_bad, keep_think=not args.no_think)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verb = "reused" if stats.get("reused") else "wrote"
    skipped = stats["skipped_total"]
    note = f", {skipped} bad lines skipped" if skipped else ""
    print(f"{verb} {args.out}.bin/.idx: {stats['documents']} {args.kind}, {stats['tokens']} "
          f"tokens{note}; stats {args.out}.stats.json")
    return 0


def cmd_data_it_mix(args, argv: list[str]) -> int:
    from msm_megatron.data.it_mix import build_it_mix

    try:
        counts = build_it_mix(args.inputs, Path(args.out), args.total, args.seed, args.table)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {sum(counts.values()):,} chats (table {args.table}: "
          + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ")")
    return 0


def cmd_data_mmlu(args, argv: list[str]) -> int:
    from msm_megatron.data.mmlu import build_mmlu

    try:  # --explanations with --style explain only: build_mmlu says so
        counts = build_mmlu(args.source, args.style, Path(args.out),
                            Path(args.explanations) if args.explanations else None,
                            args.count, args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    what = "prompts" if args.style == "explain-prompts" else "chats"
    dropped = {k: v for k, v in counts.items() if k != "written"}
    note = ("; " + ", ".join(f"{k} {v:,}" for k, v in dropped.items())) if dropped else ""
    print(f"wrote {args.out}: {counts['written']:,} {what} ({args.style}){note}")
    return 0


def cmd_demo(args, argv: list[str]) -> int:
    from msm_megatron.demo import run_demo

    return run_demo(out_dir=Path(args.out), nproc=args.nproc, overrides=args.overrides,
                    llm_base_url=args.llm_base_url, llm_model=args.llm_model,
                    judge_base_url=args.judge_base_url, judge_model=args.judge_model)


def cmd_eval(args, argv: list[str]) -> int:
    if args.overrides[:1] == ["agreement"]:  # msm eval agreement SWEEP_DIR ...
        from msm_megatron.eval.agreement import main as agreement_main

        return agreement_main(argv[argv.index("agreement") + 1:])
    if args.overrides[:1] == ["render"]:  # msm eval render OUT_DIR ...
        from msm_megatron.eval.render import main as render_main

        return render_main(argv[argv.index("render") + 1:])
    if args.completions:
        raise ConfigError("--completions is for `msm eval render OUT_DIR ...`; a sweep samples "
                          "its own completions")
    from msm_megatron.eval.sweep import run_sweep, summary_lines
    from msm_megatron.eval.sweep_config import EvalSweepConfig

    cfg = load_config(EvalSweepConfig, args.config, args.overrides)
    summary = run_sweep(cfg, progress=not args.quiet)
    for line in summary_lines(summary):
        print(line)
    print(f"report: {cfg.out_dir}/report.md")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msm", description="Model Spec Midtraining on Megatron-Core")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train from a recipe or config.yaml")
    train.add_argument("config", help="recipe name (see `msm recipes`) or path to config.yaml")
    train.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. optim.lr=2e-5")
    train.add_argument("--dry-run", action="store_true", help="validate and print the plan only")
    train.add_argument("--world-size", type=int, help="world size for --dry-run")
    train.add_argument("--nproc", type=int, help="launch N local ranks")
    train.add_argument("--model-from-hf", metavar="PATH",
                       help="take the architecture from an HF config.json (or its directory)")
    train.set_defaults(func=cmd_train)
    recipes = sub.add_parser("recipes", help="list named recipes")
    recipes.set_defaults(func=cmd_recipes)
    data = sub.add_parser("data", help="training data").add_subparsers(dest="data_command",
                                                                          required=True)
    prep = data.add_parser("prepare", help="JSONL / parquet / HF datasets -> Megatron indexed "
                           "dataset (+ loss masks)")
    prep.add_argument("inputs", nargs="+", help="JSONL or parquet files, HF `datasets` or hub "
                      "snapshot directories (DIR@SPLIT); see msm_megatron/data/sources.py")
    prep.add_argument("--tokenizer", required=True,
                      help="HF tokenizer directory or SentencePiece .model")
    prep.add_argument("--out", required=True, help="output prefix (writes PREFIX.bin/.idx ...)")
    prep.add_argument("--kind", choices=["documents", "chats"], default="documents")
    prep.add_argument("--text-field", default="text", help="document text field")
    prep.add_argument("--workers", type=int, default=2, help="tokenizer processes")
    prep.add_argument("--skip-bad", action="store_true", help="skip and count bad lines")
    prep.add_argument("--no-think", action="store_true",
                      help="chats: strip <think>...</think> (the CoT-stripped variant)")
    prep.add_argument("--chat-template", metavar="FILE",
                      help="jinja chat template to use instead of the tokenizer's own")
    prep.add_argument("--eod-token", help="end-of-document token (default: see docs/data.md)")
    prep.add_argument("--end-of-turn-token", help="token that closes an assistant turn")
    prep.set_defaults(func=cmd_data_prepare)
    mix = data.add_parser("it-mix", help="an instruction-tuning mix of the MSM paper (a named "
                          "table) from local copies of its sources -> chats JSONL")
    mix.add_argument("inputs", nargs="+", help="a dataset with a 'source' column, or "
                     "name=path per source (see docs/data.md)")
    mix.add_argument("--out", required=True, help="output JSONL")
    mix.add_argument("--table", choices=["qwen", "llama_cheese"], default="qwen",
                     help="qwen: the paper's Table 2 (10,000 chats); llama_cheese: the "
                     "Llama-3.1-8B cheese experiment's mix (13,500); see docs/data.md")
    mix.add_argument("--total", type=int, default=None,
                     help="rows, the table's counts scaled to it (default: the table's sum)")
    mix.add_argument("--seed", type=int, default=0)
    mix.set_defaults(func=cmd_data_it_mix)
    mmlu = data.add_parser("mmlu", help="MMLU rows -> A/B answer chats, explanation prompts, or "
                           "explanation chats (see docs/data.md)")
    mmlu.add_argument("source", help="MMLU rows (question, choices, answer) in any format "
                      "`msm data prepare` reads, e.g. /data/mmlu@auxiliary_train")
    mmlu.add_argument("--style", required=True, choices=["binary", "explain-prompts", "explain"],
                      help="binary: A/B answer chats; explain-prompts: prompts for `msm generate "
                      "complete`; explain: chats from its completions")
    mmlu.add_argument("--out", required=True, help="output JSONL")
    mmlu.add_argument("--explanations", metavar="FILE", help="--style explain only: the "
                      "results.jsonl `msm generate complete` wrote for the explain-prompts")
    mmlu.add_argument("--count", type=int, help="rows sampled without replacement (default: all)")
    mmlu.add_argument("--seed", type=int, default=0, help="sampling seed (explain-prompts and "
                      "explain need the same one)")
    mmlu.set_defaults(func=cmd_data_mmlu)
    from msm_megatron.convert.commands import add_parser as add_convert_parser

    add_convert_parser(sub)
    from msm_megatron.generate.commands import add_parser as add_generate_parser

    add_generate_parser(sub)
    from msm_megatron.pipeline.commands import add_parser as add_pipeline_parser

    add_pipeline_parser(sub, run_argv=main)  # a pipeline stage runs `msm <argv>` in-process
    ev = sub.add_parser("eval", help="agentic-misalignment sweep over HF exports (report); "
                        "`msm eval agreement SWEEP_DIR ...` compares two judges; "
                        "`msm eval render OUT_DIR ...` writes the prompts without a model")
    ev.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. preset=paper")
    ev.add_argument("--config", help="sweep YAML (see msm_megatron/eval/sweep_config.py)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.add_argument("--completions", metavar="FILE",
                    help="`msm eval render` only: JSONL of completions to build judge requests for")
    ev.set_defaults(func=cmd_eval)
    demo = sub.add_parser("demo", help="CPU demo: the whole pipeline on a toy Qwen3 "
                          "(examples/pipeline/toy.yaml)")
    demo.add_argument("overrides", nargs="*", help="dotlist overrides for the toy recipe")
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--nproc", type=int, default=1, help="ranks (2 with parallel.tp=2)")
    demo.add_argument("--llm-base-url", help="OpenAI-compatible endpoint: generate the corpus "
                      "and chats from the example spec instead of using the bundled ones")
    demo.add_argument("--llm-model", help="model name at --llm-base-url")
    demo.add_argument("--judge-base-url", help="OpenAI-compatible endpoint of the eval judge "
                      "(default: --llm-base-url; none: mechanical checks only)")
    demo.add_argument("--judge-model", help="model name at --judge-base-url")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``msm`` console script."""
    from msm_megatron._compat.quiet import quiet_third_party

    quiet_third_party()
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may also follow options (`msm train X --nproc 2 parallel.tp=2`).
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    from msm_megatron.llm import outcome
    from msm_megatron.llm.backend import PermanentError, TransientError

    try:
        return args.func(args, argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return outcome.EXIT_BAD_SETTING
    except PermanentError as exc:  # 400/401/404…: the same request would fail the same way
        print(f"error: {exc} (a rerun fails the same way until that is fixed)", file=sys.stderr)
        return outcome.EXIT_BAD_SETTING
    except outcome.EndpointUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return outcome.EXIT_UNREACHABLE
    except outcome.IncompleteRun as exc:
        print(f"error: {exc}", file=sys.stderr)
        return outcome.EXIT_INCOMPLETE
    except TransientError as exc:  # an endpoint that kept failing; completed calls are cached
        print(f"error: {exc} (completed calls are cached: rerun the same command to resume)",
              file=sys.stderr)
        return outcome.EXIT_INCOMPLETE
    except KeyboardInterrupt:
        import shlex

        print(f"\ninterrupted; completed work is kept: resume with `msm {shlex.join(argv)}`",
              file=sys.stderr)
        return outcome.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
