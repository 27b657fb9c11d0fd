"""What ``msm pipeline`` checks before it runs or submits anything (and what --dry-run reports).

A study's jobs can wait in a queue for hours; whatever would fail there is found here, on the
login node, and every problem is listed at once, naming the stage, field or file and the fix:

- every input exists: the corpus, the AFT chats (without generation), the instruction mix, the
  spec files (with generation), the chat template, the clones, value probes and forced-choice
  eval sets the eval reads, and the cluster's ``.env`` file (``--executor slurm``);
- the SFT chats can be rendered: ``chat_template`` compiles, or the base tokenizer has one;
- the base model is an HF model directory (``config.json``). A dry run only warns when it is
  not there yet (it plans without it); a real run or a submission refuses;
- every training stage's resolved config passes the trainer's own validation
  (:func:`msm_megatron.validate.problems`) at that stage's world size: nodes × ranks per node.
- (``--executor slurm``) every stage's resources can be submitted: ``sbatch_args`` that are
  sbatch options the executor does not set itself, one partition, ``python`` / ``container``
  that pass through ``--export`` (:func:`msm_megatron.pipeline.slurm.resource_problems`).

A dry run prints the plan even when inputs are missing (it names them after the plan, and
still exits 2): a study can be planned before anything is downloaded.

Example::

    plan, warnings = preflight(exp, "slurm", dry_run=True)   # PreflightFailed lists them
"""

from __future__ import annotations

from pathlib import Path

from msm_megatron.config import Config, ConfigError, apply_overrides, load_yaml
from msm_megatron.pipeline.experiment import ExperimentConfig
from msm_megatron.pipeline.plan import Plan, build_plan, ranks_per_node

TRAINING = ("midtrain", "sft")


def preflight(exp: ExperimentConfig, executor: str, dry_run: bool) -> tuple[Plan, list[str]]:
    """Plan ``exp`` and check everything a job of it would need.

    Args:
        exp: The loaded experiment (its paths absolute).
        executor: ``local`` or ``slurm`` (the cluster file and the stages' Slurm resources
            are checked for ``slurm`` only, and Transformer Engine is assumed on a cluster,
            looked for here locally).
        dry_run: A base model that does not exist yet is a warning, not a problem.

    Returns:
        (the plan, warnings about what could not be checked).

    Raises:
        ConfigError: listing every problem found; nothing was run or submitted.
    """
    problems = input_problems(exp, executor)
    warnings = []
    base = base_model_problem(exp)
    if base and dry_run:
        warnings.append(f"{base}. The dry run plans without it (its conversion's hash does not "
                        "cover its config.json yet; the recipes' architecture is used as "
                        "is); a real run refuses until it exists")
    elif base:
        problems.append(base)
    plan = None
    try:
        plan = build_plan(exp)
    except ConfigError as exc:
        problems.append(str(exc))
    else:
        problems += training_problems(plan, _te_on_target(executor))
        if executor == "slurm":
            from msm_megatron.pipeline.slurm import resource_problems

            problems += resource_problems(plan)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        listing += "".join(f"\n  (warning) {w}" for w in warnings)
        raise PreflightFailed(f"experiment '{exp.name}' fails its checks"
                              f"{'' if dry_run else '; nothing was run or submitted'}:\n"
                              f"{listing}", plan)
    return plan, warnings


class PreflightFailed(ConfigError):
    """The problems found, and the plan when it could be built (a dry run prints it)."""

    def __init__(self, message: str, plan: Plan | None):
        super().__init__(message)
        self.plan = plan


def input_problems(exp: ExperimentConfig, executor: str) -> list[str]:
    """The input files, clones and cluster file that are missing (one message each)."""
    problems = []
    if exp.generation.enabled:
        problems += [f"specs.{name}={path}: no such file (generation reads it)"
                     for name, path in exp.specs.items() if not Path(path).is_file()]
    else:
        fix = "fix the path, or set generation.enabled=true to generate it from the spec"
        if set(exp.specs) - set(exp.corpora):  # some spec trains on the shared corpus
            problems += [_data_problem(f"corpus[{i}]", p, fix) for i, p in enumerate(exp.corpus)]
        problems += [_data_problem(f"corpora.{name}[{i}]", p, fix)
                     for name, files in exp.corpora.items() for i, p in enumerate(files)]
        problems.append(_data_problem("aft_chats", exp.aft_chats, fix))
    fix = "fix the path, or remove it from sft_mix"
    problems += [_data_problem(f"sft_mix[{i}]", p, fix) for i, p in enumerate(exp.sft_mix)]
    problems.append(chat_template_problem(exp))
    if exp.eval.enabled:
        problems += eval_problems(exp.eval.overrides)
    if executor == "slurm":
        from msm_megatron.pipeline.slurm import cluster_env_file

        try:
            cluster_env_file(exp.slurm.cluster)
        except ConfigError as exc:
            problems.append(str(exc))
    return [p for p in problems if p]


def _data_problem(field: str, path: str, fix: str) -> str:
    from msm_megatron.data.sources import SourceFormatError, data_files

    try:
        data_files(path)
    except SourceFormatError as exc:
        return f"{field}: {exc} ({fix})"
    return ""


def eval_problems(overrides: list[str]) -> list[str]:
    """What the eval jobs would fail on: bad ``eval.overrides``, missing clones (official
    scenarios) or templates in them, a missing value-probes file or lm-eval task folder."""
    from msm_megatron.eval.agentic.official import AM_URL, MSM_URL
    from msm_megatron.eval.sweep_config import EvalSweepConfig

    try:
        sweep = apply_overrides(EvalSweepConfig(), overrides)
    except ConfigError as exc:
        return [f"eval.overrides: {exc}"]
    problems = []
    if "forced_choice" in sweep.tasks:
        problems += _forced_choice_problems(sweep)
    if "value_generalization" in sweep.tasks and not Path(sweep.value_probes).is_file():
        problems.append(f"eval.overrides: value_probes={sweep.value_probes}: no such file")
    if sweep.lm_eval_include and not Path(sweep.lm_eval_include).is_dir():
        problems.append(f"eval.overrides: lm_eval_include={sweep.lm_eval_include}: no such "
                        "directory")
    if sweep.scenarios.source != "official":
        return problems
    clones = {"scenarios.msm_repo": (sweep.scenarios.msm_repo, MSM_URL),
              "scenarios.agentic_misalignment_repo":
                  (sweep.scenarios.agentic_misalignment_repo, AM_URL)}
    missing = [f"eval.overrides: {key}={path}: no such directory (git clone {url} {path}, or "
               "fix the path)" for key, (path, url) in clones.items()
               if path and not Path(path).is_dir()]
    if missing or not any(path for path, _ in clones.values()):
        return problems + (missing or [f"eval.overrides: scenarios.source=official needs "
                                       f"scenarios.msm_repo (a clone of {MSM_URL}) and/or "
                                       f"scenarios.agentic_misalignment_repo ({AM_URL})"])
    return problems + _scenario_problems(sweep)


def _forced_choice_problems(sweep) -> list[str]:
    """Eval sets that are missing, or none named."""
    if not sweep.forced_choice.sets:
        return ["eval.overrides: tasks=[forced_choice] needs forced_choice.sets "
                "({name: path of an eval set})"]
    fix = "download the eval set there, or fix the path"
    return [_data_problem(f"eval.overrides: forced_choice.sets.{name}", path, fix)
            for name, path in sweep.forced_choice.sets.items()]


def _scenario_problems(sweep) -> list[str]:
    """Render every prompt of the preset from the clones, as the eval does before any model
    loads (a clone of the wrong repository, or at a revision without a template, fails here)."""
    from msm_megatron.eval.agentic.pysource import SourceError
    from msm_megatron.eval.sweep import scenario_source

    try:
        source = scenario_source(sweep.scenarios)
        for condition in source.preset(sweep.preset, sweep.assistant_name).conditions:
            source.prompt(condition)
    except (ConfigError, SourceError) as exc:
        return [f"eval.overrides: {exc}"]
    return []


def chat_template_problem(exp: ExperimentConfig) -> str:
    """Why the SFT chats could not be rendered ("" when they can, or when the base model is
    not there yet to tell): a ``chat_template`` file that is missing or not valid Jinja, a base
    tokenizer without a template of its own and no ``chat_template``, or a template whose
    assistant turn does not close with the end-of-turn token."""
    from msm_megatron.data.chat import compile_template

    if exp.chat_template:
        path = Path(exp.chat_template)
        if not path.is_file():
            return f"chat_template={path}: no such file (a .jinja chat template)"
        try:
            compile_template(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            return f"chat_template={path}: {exc}"
    if exp.base_model == "toy" or not (Path(exp.base_model) / "tokenizer_config.json").is_file():
        return ""
    problem = sample_chat_problem(exp.base_model, exp.chat_template, exp.end_of_turn_token)
    return f"base_model={exp.base_model}: {problem}" if problem else ""


def sample_chat_problem(tokenizer: str | Path, template: str | None,
                        end_of_turn_token: str | None) -> str:
    """Render a two-turn chat as the SFT data will be rendered: "" when its assistant turn gets
    a loss mask, else why not (and what to set)."""
    from msm_megatron.data.chat import render_chat
    from msm_megatron.data.tokenizers import load_tokenizer

    try:
        tok = load_tokenizer(tokenizer, chat_template=template,
                             end_of_turn_token=end_of_turn_token)
    except ValueError as exc:
        return f"its tokenizer does not load: {exc} (check end_of_turn_token)"
    if not tok.chat_template:
        return ("its tokenizer has no chat template, and the SFT chats need one: set "
                "chat_template to a .jinja file (examples/chat_templates/ has some)")
    chat = [{"role": "user", "content": "Which do you prefer?"},
            {"role": "assistant", "content": "A) The cheaper one."}]
    try:
        render_chat(tok, chat)
    except ValueError as exc:
        return (f"a sample chat does not render with "
                f"{template or 'its chat template'}: {exc} (a template whose turns end with "
                "another token needs end_of_turn_token)")
    return ""


def base_model_problem(exp: ExperimentConfig) -> str:
    """Why ``base_model`` cannot be converted yet ("" when it can, or is the toy model)."""
    if exp.base_model == "toy":
        return ""
    base = Path(exp.base_model)
    if (base / "config.json").is_file():
        return ""
    what = "no such directory" if not base.is_dir() else "no config.json (not an HF model)"
    return (f"base_model={exp.base_model}: {what}; download the model there (huggingface-cli "
            "download <org/name> --local-dir <dir>), fix the path, or use 'toy' for the CPU "
            "toy model")


def training_problems(plan: Plan, te_available: bool) -> list[str]:
    """The trainer's validation of every training stage's resolved config at its world size:
    one message per stage, or per group of stages with the same problems (the seeds and arms
    of one stage kind), naming them, the problems and what to change."""
    from msm_megatron.validate import problems as validation_problems

    found: dict[tuple[str, ...], list[str]] = {}  # the problems of a config -> its stages
    for stage in plan.order():
        if stage.kind in TRAINING:
            cfg = load_yaml(stage.config, Config)
            problems = validation_problems(cfg, stage.ranks, te_available)
            if problems:
                found.setdefault((stage.kind, *problems), []).append(stage.name)
    out = []
    for (kind, *problems), names in found.items():
        stage = plan.stages[names[0]]
        res = stage.resources
        where = names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"
        out.append(f"{where}: recipe {stage.params['recipe']} on {res['nodes']} node(s) × "
                   f"{ranks_per_node(res)} rank(s) = world {stage.ranks} (change "
                   f"{kind}.overrides or {kind}.resources):"
                   + "".join(f"\n      {problem}" for problem in problems))
    return out


def _te_on_target(executor: str) -> bool:
    """Transformer Engine where the training jobs run: assumed on a cluster (NGC containers
    ship it), looked for here when the jobs run on this machine."""
    if executor != "local":
        return True
    from msm_megatron._compat.te import te_available

    return te_available()
