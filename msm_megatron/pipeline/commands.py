"""``msm pipeline``: plan an experiment, then run it locally or submit it to Slurm.

Examples::

    msm pipeline examples/pipeline/toy.yaml --dry-run           # the plan: stages, jobs, tokens
    msm pipeline exp.yaml --executor slurm --dry-run            # ... and every sbatch line
    msm pipeline examples/pipeline/toy.yaml                     # run locally, one job at a time
    msm pipeline exp.yaml seeds=[0,1] --parallel 2              # overrides; two jobs at once
    msm pipeline exp.yaml --executor slurm slurm.cluster=mycluster --wait
    msm pipeline exp.yaml --status                              # where every stage stands

Paths in the experiment file are relative to its directory, paths in overrides typed here
relative to the current directory. Before anything runs or is submitted (and in a dry run),
every input, clone and cluster file and every training stage's config are checked
(:mod:`msm_megatron.pipeline.checks`); all problems are listed at once.

A rerun skips every stage whose completion marker matches its hash and redoes only what
changed (and what depends on it). ``msm pipeline-stage <plan.json> <stage>`` is what each job
runs (the executors call it; you rarely need to).
"""

from __future__ import annotations

from pathlib import Path

from msm_megatron.config import apply_overrides, load_config, load_yaml
from msm_megatron.pipeline.experiment import ExperimentConfig


def cmd_pipeline(args, argv: list[str]) -> int:
    import sys

    from msm_megatron.pipeline.checks import PreflightFailed, preflight

    exp = load_config(ExperimentConfig, args.experiment, args.overrides, what="experiment")
    if args.status:  # where each stage stands (markers, the Slurm ledger, scontrol)
        from msm_megatron.pipeline.plan import build_plan
        from msm_megatron.pipeline.status import print_status

        return print_status(build_plan(exp))
    # every input, clone, cluster file and training config checked: all problems, or none
    try:
        plan, warnings = preflight(exp, args.executor, dry_run=args.dry_run)
    except PreflightFailed as exc:
        if args.dry_run and exc.plan is not None:  # the plan, then what a run would fail on
            print(format_plan(exc.plan, args.executor))
        raise
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    plan_path = Path(plan.out_dir) / "pipeline" / "plan.json"  # absolute, as every plan path
    if args.dry_run:
        print(format_plan(plan, args.executor))
        if args.executor == "slurm":  # what would be submitted, as sbatch lines
            from msm_megatron.pipeline.slurm import dry_run_script

            print("\n" + dry_run_script(plan, plan_path, exp.slurm))
        return 0
    plan.save(plan_path)
    if args.executor == "local":
        from msm_megatron.pipeline.local import run_local

        return run_local(plan, plan_path, parallel=args.parallel)
    from msm_megatron.pipeline.slurm import run_slurm

    return run_slurm(plan, plan_path, exp.slurm, wait=args.wait)


def stage_command(run_argv):
    """``msm pipeline-stage``, running each stage's ``msm`` command line with ``run_argv``."""

    def cmd_stage(args, argv: list[str]) -> int:
        from msm_megatron.pipeline.stage import run_stage

        return run_stage(args.plan, args.name, run_argv, args.cell_index)

    return cmd_stage


def format_plan(plan, executor: str) -> str:
    """The --dry-run report: every stage, whether it is done, its jobs, resources, steps and
    tokens, then what the eval will run."""
    from msm_megatron.pipeline.markers import is_done

    lines = [f"experiment {plan.experiment} -> {plan.out_dir} ({executor} executor)", "",
             f"{'stage':<44} {'status':<7} {'jobs':>4} {'nodes×gpus':>10} {'time':>9} "
             f"{'steps':>10} {'train tokens':>13}"]
    todo, total_tokens, pending = 0, 0, 0
    for stage in plan.order():
        done = is_done(plan, stage)
        todo += not done
        jobs = len(stage.cells) or 1
        res = stage.resources
        steps, tokens = _train_budget(stage)
        total_tokens += tokens if not done and tokens else 0
        pending += isinstance(steps, str)
        lines.append(f"{stage.name:<44} {'done' if done else 'to run':<7} {jobs:>4} "
                     f"{res['nodes']}×{res['gpus_per_node']:<8} {res['time']:>9} "
                     f"{steps or '':>10} {f'{tokens:,}' if tokens else '':>13}")
    lines += ["", f"{todo} of {len(plan.stages)} stages to run; "
              f"{total_tokens:,} training tokens to process"
              + (f" + {pending} stages budgeted in epochs of data not prepared yet (their steps "
                 "are counted once it is)" if pending else "")]
    lines += [_generation_estimate(s) for s in plan.order()
              if s.kind == "generate_docs" and not is_done(plan, s)]
    lines += _eval_lines(plan)
    return "\n".join(lines)


def _eval_lines(plan) -> list[str]:
    """What the eval stage will run: arms, then per task its conditions, sets and scoring."""
    from msm_megatron.eval.sweep_config import EvalSweepConfig

    stage = next((s for s in plan.order() if s.kind == "eval"), None)
    if stage is None or not Path(stage.config).is_file():
        return []
    cfg = load_yaml(stage.config, EvalSweepConfig)
    lines = ["", f"eval: {len(cfg.arms)} arms "
                 f"({', '.join(a.partition('=')[0] for a in cfg.arms)}), runner {cfg.runner}"]
    if "agentic_misalignment" in cfg.tasks:
        lines.append(_agentic_line(cfg))
    if "forced_choice" in cfg.tasks:
        fc = cfg.forced_choice
        sets = ", ".join(f"{name} ({path})" for name, path in fc.sets.items())
        lines.append(f"  forced_choice: {sets}; prompt format {fc.prompt_format}; option "
                     f"log-likelihoods and a greedy answer; differences from "
                     f"{fc.baseline_arm or 'base'}")
    lines += [f"  {task}" for task in cfg.tasks
              if task not in ("agentic_misalignment", "forced_choice")]
    return lines


def _agentic_line(cfg) -> str:
    from msm_megatron.eval.agentic.grid import preset
    from msm_megatron.eval.sweep_config import scoring

    chosen = preset(cfg.preset if cfg.preset != "full" else "paper", cfg.assistant_name)
    samples = cfg.samples or chosen.samples
    cells = (f"{len(chosen.conditions)} conditions × {samples} samples"
             if cfg.preset != "full" else f"the full grid × {samples} samples")
    judge = ("no judge (mechanical checks)" if scoring(cfg) == "mechanical" else
             f"judge {cfg.judge.kind}:{cfg.judge.model}, protocol {cfg.judge.protocol}")
    return (f"  agentic_misalignment, preset {cfg.preset}: {cells}, temperature "
            f"{chosen.temperature if cfg.temperature is None else cfg.temperature}; scenarios "
            f"{cfg.scenarios.source}"
            + (f" (MSM clone {cfg.scenarios.msm_repo}, agentic-misalignment clone "
               f"{cfg.scenarios.agentic_misalignment_repo})"
               if cfg.scenarios.source == "official" else "") + f"; {judge}")


def _train_budget(stage) -> tuple[int | str | None, int | None]:
    """(steps, tokens) of a training stage; steps is ``"N epoch(s)"`` while its epochs are not
    yet countable (the data it trains on is made by an earlier stage)."""
    if stage.kind not in ("midtrain", "sft") or not Path(stage.config).is_file():
        return None, None
    from msm_megatron.config import Config
    from msm_megatron.estimate import epoch_budget
    from msm_megatron.validate import total_steps

    cfg = load_yaml(stage.config, Config)
    steps = total_steps(cfg, epoch_budget(cfg)[0])
    if steps is None:
        return (f"{cfg.train.epochs:g} epoch(s)" if cfg.train.epochs else None), None
    return steps, steps * cfg.train.global_batch_size * cfg.data.seq_length


def _generation_estimate(stage) -> str:
    """The docs stage's projected documents, LLM calls and tokens (``msm generate --preview``)."""
    from msm_megatron.generate.config import DocsGenConfig
    from msm_megatron.generate.docs import estimate
    from msm_megatron.spec import load_spec

    cfg = apply_overrides(DocsGenConfig(), [*stage.params["backend"], *stage.params["overrides"]])
    est = estimate(cfg, load_spec(stage.spec, cfg.docs.model_name, cfg.docs.provider_name))
    rng = "{:,} – {:,}".format
    return (f"{stage.name}: ≈ {rng(*est['documents'])} documents, {rng(*est['calls'])} LLM "
            f"calls, input ≈ {rng(*est['tokens_in'])} tokens, output ≈ "
            f"{rng(*est['tokens_out'])} tokens (chats not included)")


def add_parser(sub, run_argv) -> None:
    """Register ``msm pipeline`` and ``msm pipeline-stage``; ``run_argv(argv) -> exit code`` is
    how a stage runs its ``msm`` command line (the CLI passes its own ``main``)."""
    p = sub.add_parser("pipeline", help="spec -> corpus -> training arms -> eval, as one graph "
                       "(local or Slurm)")
    p.add_argument("experiment", help="experiment YAML (see examples/pipeline/toy.yaml)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. seeds=[0,1]")
    p.add_argument("--executor", choices=["local", "slurm"], default="local")
    p.add_argument("--parallel", type=int, default=1, help="local: jobs at once (1)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("--wait", action="store_true", help="slurm: wait for every job of the "
                   "plan (earlier submissions' too), report; exit 1 when a stage failed")
    p.add_argument("--status", action="store_true", help="one row per stage: state, job, "
                   "nodes, elapsed, last log line (from the markers and Slurm); submits nothing")
    p.set_defaults(func=cmd_pipeline)
    p = sub.add_parser("pipeline-stage", help="run one stage of a plan (what pipeline jobs run)")
    p.add_argument("plan", help="<out_dir>/pipeline/plan.json")
    p.add_argument("name", help="stage name, e.g. midtrain/default/s0")
    p.add_argument("--cell-index", type=int, help="array stages: which cell")
    p.set_defaults(func=stage_command(run_argv))
