"""Checkpoint conversion time and peak memory: ours vs Megatron-Bridge's ``AutoBridge``.

Run from the repository root (CPU; ≈10 minutes at the default size on a 2-core machine)::

    bash bench/bridge_env.sh                 # once: Megatron-Bridge in bench/.venv-bridge
    .venv/bin/python bench/convert.py        # --layers 20 --hidden 2048 … (≈1.6B parameters)

A random Qwen3-shaped model (untied, GQA, q/k norm, bf16, Qwen's 151,936 vocabulary) is written
as sharded safetensors; then each tool converts it HF → Megatron (``torch_dist``, TP=PP=1) and
back, each direction in a fresh process. Reported per direction: the conversion's own seconds
(imports excluded), the process's wall seconds, and its peak RSS (``wait4``'s ``ru_maxrss``).
Both round trips are checked tensor by tensor against the original (``torch.equal``).

- **ours**: :func:`msm_megatron.convert.engine.hf_to_megatron` / ``megatron_to_hf`` (streaming).
- **peer**: Megatron-Bridge 0.6.2 ``AutoBridge`` (``bench/bridge_convert.py``): loads the HF
  model into a Megatron model in memory and saves it with Megatron's ``dist_checkpointing``;
  export loads the Megatron checkpoint into a model and streams HF tensors out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BRIDGE_PYTHON = ROOT / "bench" / ".venv-bridge" / "bin" / "python"


def write_random_model(out: Path, layers: int, hidden: int) -> int:
    """A random bf16 Qwen3-shaped HF directory, written tensor by tensor; returns #params."""
    from msm_megatron.convert import arch_spec
    from msm_megatron.convert.hf_io import PlannedTensor, SafetensorsStreamWriter
    from msm_megatron.models.hf_config import hf_config_from_model, model_config_from_hf
    from msm_megatron.weight_mapping import resolve

    hf = {"model_type": "qwen3", "vocab_size": 151936, "hidden_size": hidden,
          "intermediate_size": hidden * 3, "num_hidden_layers": layers,
          "num_attention_heads": hidden // 128, "num_key_value_heads": hidden // 256,
          "head_dim": 128, "max_position_embeddings": 40960, "rope_theta": 1e6,
          "rms_norm_eps": 1e-6, "tie_word_embeddings": False}
    model = model_config_from_hf(hf)
    arch = arch_spec("qwen3")
    plan = [PlannedTensor(name, resolve(shape, model), torch.bfloat16)
            for mapping, layer in arch.groups(model)
            for name, shape in zip(arch.hf_names(mapping, layer), mapping.shapes, strict=True)]
    writer = SafetensorsStreamWriter(out, plan, 2 * 10**9)
    gen = torch.Generator().manual_seed(0)
    for item in plan:
        writer.write(item.name, (torch.randn(item.shape, generator=gen) * 0.02).bfloat16())
    writer.close()
    config = {**hf_config_from_model(model), "torch_dtype": "bfloat16",
              "bos_token_id": 151643, "eos_token_id": 151645}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return sum(p.nbytes for p in plan) // 2


def popen_rss(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; its last JSON line, wall seconds and its own peak RSS (GiB, via wait4)."""
    started = time.time()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.time() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:4])}… failed ({proc.returncode}):\n"
                             f"{err.read()[-3000:]}")
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    result.update(wall=wall, peak_rss_gib=usage.ru_maxrss / 2**20)
    return result


def worker(job: str, src: str, dst: str, layers: int, hidden: int) -> None:
    """Child process: make the model, or one direction of our converter; prints a JSON line.

    Everything heavy runs in children: a child's ``ru_maxrss`` includes the parent's resident
    set at fork time, so the parent stays small (it only imports torch).
    """
    t0 = time.time()
    from msm_megatron._compat.quiet import quiet_third_party
    from msm_megatron.convert.engine import hf_to_megatron, megatron_to_hf

    quiet_third_party()
    started = time.time()
    if job == "make":
        params = write_random_model(Path(dst), layers, hidden)
        print(json.dumps({"params": params}))
        return
    if job == "import":
        hf_to_megatron(src, dst, progress=False)
    else:
        megatron_to_hf(src, dst, progress=False)
    print(json.dumps({"direction": job, "seconds": time.time() - started,
                      "import_seconds": started - t0}))


def same_tensors(a: Path, b: Path) -> bool:
    from msm_megatron.convert.hf_io import HFCheckpoint

    x, y = HFCheckpoint(a), HFCheckpoint(b)
    if sorted(x.keys()) != sorted(y.keys()):
        return False
    return all(torch.equal(x.get(k), y.get(k)) and x.dtype(k) == y.dtype(k) for k in x.keys())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--skip-bridge", action="store_true")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.layers, args.hidden)
        return
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(os.cpu_count())}
    with tempfile.TemporaryDirectory(dir=ROOT / "runs" if (ROOT / "runs").exists() else None
                                     ) as tmp:
        tmp = Path(tmp)
        me = [sys.executable, __file__, "--layers", str(args.layers), "--hidden",
              str(args.hidden), "--worker"]
        params = popen_rss([*me, "make", "-", str(tmp / "hf")], env)["params"]
        size = sum(p.stat().st_size for p in (tmp / "hf").glob("*.safetensors")) / 2**30
        print(f"random Qwen3-shaped model: {params / 1e9:.2f}B parameters, {size:.2f} GiB bf16 "
              f"({args.layers} layers, hidden {args.hidden})", flush=True)
        rows = {}
        rows[("ours", "import")] = popen_rss([*me, "import", str(tmp / "hf"), str(tmp / "o_meg")],
                                             env)
        rows[("ours", "export")] = popen_rss([*me, "export", str(tmp / "o_meg"),
                                              str(tmp / "o_back")], env)
        if not args.skip_bridge:
            if not BRIDGE_PYTHON.exists():
                raise SystemExit("Megatron-Bridge venv missing: run `bash bench/bridge_env.sh`")
            bridge = [str(BRIDGE_PYTHON), str(ROOT / "bench" / "bridge_convert.py")]
            rows[("bridge", "import")] = popen_rss(
                [*bridge, "--hf", str(tmp / "hf"), "--megatron-out", str(tmp / "b_meg")])
            rows[("bridge", "export")] = popen_rss(
                [*bridge, "--megatron", str(tmp / "b_meg"), "--hf-template", str(tmp / "hf"),
                 "--hf-out", str(tmp / "b_back")])
        exact = {"ours": same_tensors(tmp / "hf", tmp / "o_back")}  # after all measurements
        if not args.skip_bridge:
            exact["bridge"] = same_tensors(tmp / "hf", tmp / "b_back")
    print(f"\nmachine: {platform.node()} {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"{'tool':<8}{'direction':<11}{'convert s':>10}{'process s':>11}{'peak RSS GiB':>14}")
    for (tool, direction), r in rows.items():
        print(f"{tool:<8}{direction:<11}{r['seconds']:>10.1f}{r['wall']:>11.1f}"
              f"{r['peak_rss_gib']:>14.2f}")
    for direction in ("import", "export"):
        if ("bridge", direction) in rows:
            o, b = rows[("ours", direction)], rows[("bridge", direction)]
            print(f"{direction}: time ours/bridge {o['seconds'] / b['seconds']:.2f}×, "
                  f"peak RSS ours/bridge {o['peak_rss_gib'] / b['peak_rss_gib']:.2f}×")
    print("round trip bit-exact: " + ", ".join(f"{k} {v}" for k, v in exact.items()))


if __name__ == "__main__":
    main()
