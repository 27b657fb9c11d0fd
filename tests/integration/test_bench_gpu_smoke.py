"""The one-GPU benchmark's plumbing, on CPU with a tiny model (timings here mean nothing).

Keeps ``bench/gpu/train_throughput.py`` runnable between the rare GPU sessions: every row runs in
its own process, and the table has a number (or an error) for each.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.launch import REPO, run_env


def test_benchmark_rows_run_on_cpu(tmp_path):
    proc = subprocess.run(
        [sys.executable, "bench/gpu/train_throughput.py", "--smoke", "--out", str(tmp_path),
         "--only", "ours:tiny,hf:tiny,ours_sft:tiny,hf_sft:tiny,kernels:tiny"],
        cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| tiny |")]
    assert [r.split("|")[2].strip() for r in rows] == ["ours", "hf", "ours_sft", "hf_sft"], table
    assert all("×" in r for r in rows if "ours" in r.split("|")[2]), table  # ratio vs the peer
    assert "| sdpa | " in table and "e-0" in table.split("| sdpa | ")[1][:12], table


SWEEP_ONLY = ("ours:tiny:baseline,hf:tiny,ours:tiny:all,ours:tiny:all+compile,ours_sft:tiny:all,"
              "hf_sft:tiny,ours:tiny:concat+cuda_graphs")


def test_sweep_ladder_and_profile_on_cpu(tmp_path):
    """``--sweep``: every kind of ladder row (the switches together, with compile, packed SFT,
    the peers) runs, partial results are saved, and the profiled row writes its summary. The
    single-switch rows run the same code with fewer switches; CUDA graphs are skipped off GPU."""
    sys.path.insert(0, str(REPO / "bench" / "gpu"))
    import train_throughput as bench

    ladder = bench.sweep_rows()
    assert ladder[:6] == [("ours", "0.6b", "baseline"), ("hf", "0.6b", "hf"),
                          ("ours", "0.6b", "all"), ("ours", "1.7b", "baseline"),
                          ("hf", "1.7b", "hf"), ("ours", "1.7b", "all")]
    assert {label for _, _, label in ladder} <= set(bench.SWITCHES) | {"hf"}
    assert bench.SWITCHES["all"] == {"mbs": 4, "fused_swiglu": True, "loss_chunk": 4096}
    proc = subprocess.run(
        [sys.executable, "bench/gpu/train_throughput.py", "--smoke", "--sweep", "--out",
         str(tmp_path), "--only", SWEEP_ONLY],
        cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["row"], r["label"]) for r in results] == [
        ("ours", "baseline"), ("hf", "hf"), ("ours", "all"), ("ours", "all+compile"),
        ("ours_sft", "all"), ("hf_sft", "hf"), ("ours", "concat+cuda_graphs")]
    done = [r for r in results if "error" not in r]
    assert len(done) == 6, [r.get("error") for r in results]
    assert results[-1]["error"] == "skipped: CUDA graphs need a GPU"
    assert results[2]["switches"] == {"mbs": 4, "fused_swiglu": True, "loss_chunk": 48}
    # the same tokens and initial weights: the switches change how, not what, is computed
    assert abs(results[2]["loss"] - results[0]["loss"]) < 1e-4
    assert abs(results[3]["loss"] - results[0]["loss"]) < 1e-4
    table = (tmp_path / "table.md").read_text()
    all_row = next(line for line in table.splitlines() if "| ours | all |" in line)
    assert all_row.count("×") == 2, all_row  # vs hf and vs baseline
    profile = (tmp_path / "profile-tiny.txt").read_text()
    assert "one training step: wall" in profile and "| ms | share | calls | name |" in profile
