"""``msm generate …`` subcommands.

Examples::

    msm generate complete prompts.jsonl gen/run1 --base-url http://127.0.0.1:8000/v1 \\
        --model Qwen/Qwen3-32B --concurrency 128
    msm generate complete prompts.jsonl gen/run2 --backend anthropic --model claude-opus-4-6
    msm generate docs examples/spec/qwen_spec.txt --preview
    msm generate docs examples/spec/qwen_spec.txt backend.base_url=http://127.0.0.1:8000/v1 \
        backend.model=Qwen/Qwen3-32B out_dir=gen/qwen_docs

Each command checks its endpoint with one cheap request before the first paid call and ends
with the exit codes of :mod:`msm_megatron.llm.outcome`: 0 complete, 2 a setting to fix, 3
incomplete (with a summary of what failed and whether a rerun helps), 4 endpoint unreachable,
130 interrupted (completed calls are cached; the same command resumes).
"""

from __future__ import annotations

from pathlib import Path

from msm_megatron.config import ConfigError, load_config
from msm_megatron.llm.outcome import DEFAULT_MAX_FAILED_FRACTION, EXIT_OK, Knobs

COMPLETE_KNOBS = Knobs("--base-url", "--timeout", "--model", None)


def cmd_complete(args, argv) -> int:
    from msm_megatron.generate.complete import complete_file
    from msm_megatron.generate.pipeline import raise_if_incomplete
    from msm_megatron.llm.http_backends import make_backend
    from msm_megatron.llm.probe import check_endpoint
    from msm_megatron.llm.retry import RetryPolicy

    backend = make_backend(args.backend, args.model, base_url=args.base_url,
                           api_key_env=args.api_key_env, timeout_s=args.timeout,
                           retry=RetryPolicy(max_attempts=args.max_attempts,
                                             base_s=args.backoff, cap_s=args.backoff_cap),
                           setting="--base-url")
    if args.batch and args.backend != "anthropic":
        raise ConfigError("--batch uses the Anthropic Message Batches API: add "
                          "--backend anthropic (OpenAI-compatible servers take requests "
                          "directly; raise --concurrency instead)")
    out = Path(args.out)
    report, stage = complete_file(Path(args.prompts), out, backend,
                                  concurrency=args.concurrency, max_tokens=args.max_tokens,
                                  temperature=args.temperature, progress=not args.quiet,
                                  batch_poll_s=args.poll if args.batch else None,
                                  check=lambda: check_endpoint(backend, COMPLETE_KNOBS))
    raise_if_incomplete("msm generate complete", [stage], backend, COMPLETE_KNOBS,
                        args.max_failed_fraction, out / "failures.jsonl",
                        "--max-failed-fraction")
    print(f"{report['succeeded']}/{report['jobs']} completed ({report['calls']} new calls, "
          f"{report['cached_calls']} from cache, {report['retries']} retries, "
          f"{report['input_tokens']} + {report['output_tokens']} tokens); "
          f"{report['failed']} failed -> {out}/failures.jsonl")
    return EXIT_OK


def cmd_docs(args, argv) -> int:
    from msm_megatron.generate.config import DocsGenConfig
    from msm_megatron.generate.docs import DocsPipeline, preview
    from msm_megatron.llm.config import backend_from
    from msm_megatron.spec import load_spec

    cfg = load_config(DocsGenConfig, args.config, args.overrides)
    spec = load_spec(args.spec, cfg.docs.model_name, cfg.docs.provider_name)
    if args.preview:
        print(preview(cfg, spec))
        return EXIT_OK
    summary = DocsPipeline(cfg, spec, backend_from(cfg.backend, "backend"),
                           progress=not args.quiet).run()
    print(f"{summary['documents']} documents ({summary['near_duplicates_removed']} near-"
          f"duplicates removed, {summary['failures']} failures) -> {cfg.out_dir}/dataset.jsonl; "
          f"{summary['input_tokens']:,} + {summary['output_tokens']:,} tokens, "
          f"${summary['cost_usd']:.2f}")
    return EXIT_OK


def cmd_chats(args, argv) -> int:
    from msm_megatron.generate.chats import ChatsPipeline
    from msm_megatron.generate.config import ChatsGenConfig
    from msm_megatron.llm.config import backend_from
    from msm_megatron.spec import load_spec

    cfg = load_config(ChatsGenConfig, args.config, args.overrides)
    spec = load_spec(args.spec, cfg.chats.model_name, cfg.chats.provider_name)
    summary = ChatsPipeline(cfg, spec, backend_from(cfg.backend, "backend"),
                            progress=not args.quiet).run()
    print(f"{summary['chats']}/{summary['target']} chats -> {cfg.out_dir}/with_cot/ and "
          f"no_cot/ ({summary['questions']} questions, {summary['duplicates']} near-duplicates, "
          f"{summary['passed_judge']} passed the judge, {summary['failures']} failures; "
          f"{summary['rounds']} rounds)")
    return EXIT_OK


def cmd_variants(args, argv) -> int:
    from msm_megatron.generate.config import VariantsGenConfig
    from msm_megatron.generate.variants import VariantsPipeline
    from msm_megatron.llm.config import backend_from

    cfg = load_config(VariantsGenConfig, args.config, args.overrides)
    summary = VariantsPipeline(cfg, Path(args.spec), backend_from(cfg.backend, "backend"),
                               progress=not args.quiet).run()
    print(f"value-augmented {summary['value_augmented_words']} words, rule-augmented "
          f"{summary['rule_augmented_words']} words -> {cfg.out_dir}/")
    return EXIT_OK


def add_parser(sub) -> None:
    """Register ``msm generate`` and its subcommands."""
    gen = sub.add_parser("generate", help="LLM generation (backends, cache, pipelines)")
    gsub = gen.add_subparsers(dest="generate_command", required=True)
    p = gsub.add_parser("complete", help="JSONL of prompts -> completions (cached, resumable)")
    p.add_argument("prompts", help="JSONL: {id, prompt} or {id, messages, system?}")
    p.add_argument("out", help="output directory (results.jsonl, report.json, calls.jsonl)")
    p.add_argument("--backend", default="openai", choices=["openai", "anthropic"])
    p.add_argument("--base-url", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    p.add_argument("--model", required=True, help="model name as the server knows it")
    p.add_argument("--api-key-env", help="environment variable holding the API key "
                   "(default OPENAI_API_KEY / ANTHROPIC_API_KEY); keys are never written")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request (600)")
    p.add_argument("--max-attempts", type=int, default=8, help="tries per call (8)")
    p.add_argument("--backoff", type=float, default=1.0, help="first backoff ceiling, s (1)")
    p.add_argument("--backoff-cap", type=float, default=60.0, help="backoff ceiling, s (60)")
    p.add_argument("--batch", action="store_true",
                   help="Anthropic Message Batches (resumable across processes)")
    p.add_argument("--poll", type=float, default=60.0, help="batch poll interval, s (60)")
    p.add_argument("--max-failed-fraction", type=float, default=DEFAULT_MAX_FAILED_FRACTION,
                   help="more failed prompts than this fraction end with exit 3 "
                   f"({DEFAULT_MAX_FAILED_FRACTION:g})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_complete)

    p = _spec_command(gsub, "docs", cmd_docs, "Model Spec -> MSM document corpus",
                      "docs.ideas_per_type=10")
    p.add_argument("--preview", action="store_true",
                   help="print projected counts and cost; send nothing")
    _spec_command(gsub, "chats", cmd_chats, "Model Spec -> AFT chats with_cot/ and no_cot/",
                  "chats.target=2000")
    _spec_command(gsub, "spec-variants", cmd_variants,
                  "rules spec -> value-augmented and rule-augmented specs", "out_dir=gen/v1")


def _spec_command(gsub, name: str, func, help_text: str, example: str):
    """A ``msm generate <name> SPEC [overrides] [--config] [--quiet]`` subcommand."""
    p = gsub.add_parser(name, help=help_text)
    p.add_argument("spec", help="spec text file with {model_name} / {provider_name}")
    p.add_argument("overrides", nargs="*", help=f"dotlist overrides, e.g. {example}")
    p.add_argument("--config", help="YAML generation config (see generate/config.py)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=func)
    return p
