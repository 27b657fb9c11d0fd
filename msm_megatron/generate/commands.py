"""``msm generate …`` subcommands.

Examples::

    msm generate complete prompts.jsonl gen/run1 --base-url http://127.0.0.1:8000/v1 \\
        --model Qwen/Qwen3-32B --concurrency 128
    msm generate complete prompts.jsonl gen/run2 --backend anthropic --model claude-opus-4-6
"""

from __future__ import annotations

from pathlib import Path


def cmd_complete(args, argv) -> int:
    from msm_megatron.generate.complete import complete_file
    from msm_megatron.generate.http_backends import make_backend
    from msm_megatron.generate.retry import RetryPolicy

    backend = make_backend(args.backend, args.model, base_url=args.base_url,
                           api_key_env=args.api_key_env, timeout_s=args.timeout,
                           retry=RetryPolicy(max_attempts=args.max_attempts,
                                             base_s=args.backoff, cap_s=args.backoff_cap))
    report = complete_file(Path(args.prompts), Path(args.out), backend,
                           concurrency=args.concurrency, max_tokens=args.max_tokens,
                           temperature=args.temperature, progress=not args.quiet)
    print(f"{report['succeeded']}/{report['jobs']} completed ({report['calls']} new calls, "
          f"{report['cached_calls']} from cache, {report['retries']} retries, "
          f"{report['input_tokens']} + {report['output_tokens']} tokens); "
          f"{report['failed']} failed -> {args.out}/failures.jsonl")
    return 0 if report["failed"] == 0 else 3


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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_complete)
