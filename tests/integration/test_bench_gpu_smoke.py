"""The one-GPU benchmark's plumbing, on CPU with a tiny model (timings here mean nothing).

Keeps ``bench/gpu/train_throughput.py`` runnable between the rare GPU sessions: every row runs in
its own process, and the table has a number (or an error) for each.
"""

from __future__ import annotations

import subprocess
import sys

from tests.distributed.launch import REPO, run_env


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
