"""``msm convert …`` subcommands (also behind the scripts in ``checkpoint_tools/``).

Examples::

    msm convert hf-to-megatron /models/Qwen3-8B ckpt/qwen3_8b            # keep dtype (bf16)
    msm convert megatron-to-hf runs/sft/checkpoints/iter_0000400 out/hf --dtype bf16
    msm convert verify /models/Qwen3-8B ckpt/qwen3_8b --generate 16      # fp32 logit parity
    msm convert verify out/hf runs/sft/checkpoints/iter_0000400 --tp 2   # torchrun, 2 ranks
    msm convert export runs/sft                                          # -> runs/sft/hf/iter_N
    msm convert lora-export runs/aft/checkpoints/iter_0000400 out/adapter   # PEFT adapter
    msm convert lora-export runs/aft/checkpoints/iter_0000400 out/merged --merged
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DTYPE_CHOICES = ("fp32", "bf16", "fp16")


def cmd_hf_to_megatron(args, argv) -> int:
    from msm_megatron.convert.engine import hf_to_megatron

    out = hf_to_megatron(args.hf_dir, args.out, dtype=args.dtype, progress=not args.quiet)
    print(f"wrote Megatron checkpoint {out} (train from it with checkpoint.load={out})")
    return 0


def cmd_megatron_to_hf(args, argv) -> int:
    from msm_megatron.convert.engine import megatron_to_hf

    out = megatron_to_hf(args.checkpoint, args.out, dtype=args.dtype, hf_assets=args.hf_assets,
                         max_shard_size=args.max_shard_size, progress=not args.quiet)
    print(f"wrote HF model {out}")
    return 0


def cmd_export(args, argv) -> int:
    from msm_megatron.convert.export import export_run

    out = export_run(args.run_dir, iteration=args.iter, out_dir=args.out, dtype=args.dtype,
                     hf_assets=args.hf_assets, progress=not args.quiet)
    print(f"wrote HF model {out}")
    return 0


def cmd_verify(args, argv) -> int:
    nproc = args.tp * args.pp
    if nproc > 1 and "RANK" not in os.environ:
        from msm_megatron.distributed import relaunch_local_ranks

        return relaunch_local_ranks(nproc, argv)
    from msm_megatron.convert.verify import format_report, verify

    report = verify(args.hf_dir, args.checkpoint, num_tokens=args.tokens, prompt=args.prompt,
                    generate=args.generate, tp=args.tp, pp=args.pp, tolerance=args.tolerance)
    if report is None:  # not rank 0
        return 0
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


def cmd_lora_export(args, argv) -> int:
    from msm_megatron.convert.lora_export import export_merged, export_peft

    if args.merged:
        out = export_merged(args.checkpoint, args.out, progress=not args.quiet)
        print(f"wrote merged HF model {out}")
    else:
        out = export_peft(args.checkpoint, args.out, base_model=args.base_model)
        print(f"wrote PEFT adapter {out}")
    return 0


def add_parser(sub) -> None:
    """Register ``msm convert`` and its subcommands on the top-level subparsers."""
    convert = sub.add_parser("convert", help="HF ⇄ Megatron checkpoints").add_subparsers(
        dest="convert_command", required=True)

    p = convert.add_parser("hf-to-megatron", help="HF directory -> Megatron torch_dist checkpoint")
    p.add_argument("hf_dir", help="HF model directory (config.json + safetensors)")
    p.add_argument("out", help="new checkpoint directory")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, help="cast (default: keep stored dtype)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_hf_to_megatron)

    p = convert.add_parser("megatron-to-hf", help="Megatron checkpoint -> HF directory")
    p.add_argument("checkpoint", help="iter_XXXXXXX directory or converted checkpoint")
    p.add_argument("out", help="HF output directory")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, help="cast (default: keep stored dtype)")
    p.add_argument("--hf-assets", help="HF directory to take config/tokenizer files from")
    p.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (5GB)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_megatron_to_hf)

    p = convert.add_parser("export", help="runs/<run>/checkpoints/iter_N -> runs/<run>/hf/iter_N")
    p.add_argument("run_dir", help="the run directory (train.run_dir)")
    p.add_argument("--iter", type=int, help="iteration (default: latest)")
    p.add_argument("--out", help="output directory (default: <run_dir>/hf/iter_N)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, help="cast (default: keep stored dtype)")
    p.add_argument("--hf-assets", help="HF directory to take config/tokenizer files from")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export)

    p = convert.add_parser("lora-export", help="LoRA run -> PEFT adapter (or merged HF model)")
    p.add_argument("checkpoint", help="iter_XXXXXXX directory of a LoRA run")
    p.add_argument("out", help="output directory")
    p.add_argument("--merged", action="store_true",
                   help="write base + adapters merged as a full HF model instead")
    p.add_argument("--base-model", help="adapter_config.json base_model_name_or_path "
                   "(default: the run's base checkpoint)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_lora_export)

    p = convert.add_parser("verify", help="HF vs Megatron fp32 logits / hidden states / greedy")
    p.add_argument("hf_dir", help="HF model directory")
    p.add_argument("checkpoint", help="Megatron checkpoint directory")
    p.add_argument("--tokens", type=int, default=32, help="random tokens to compare (32)")
    p.add_argument("--prompt", help="text to tokenize instead of random tokens")
    p.add_argument("--generate", type=int, default=0, help="greedy tokens to compare")
    p.add_argument("--tp", type=int, default=1, help="Megatron tensor parallel size")
    p.add_argument("--pp", type=int, default=1, help="Megatron pipeline parallel size")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max logit |diff| to pass")
    p.add_argument("--json", help="also write the report to this file")
    p.set_defaults(func=cmd_verify)
