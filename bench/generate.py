"""Generation client throughput: sustained requests/s vs the ideal (concurrency ÷ latency).

Run from the repository root (CPU, about a minute)::

    .venv/bin/python bench/generate.py            # --latency 0.5 --rounds 8

Starts the local OpenAI-compatible server (``tests/helpers/llm_server.py``, no faults) with a fixed
simulated latency per request, then runs ``rounds × concurrency`` distinct prompts through our
full client path — :class:`~msm_megatron.llm.runner.CallRunner` (cache writes, content
parsing, accounting) over :class:`~msm_megatron.llm.http_backends.OpenAICompatBackend`
(httpx, keep-alive pool) — at concurrency 1, 32 and 256. The peer is the ideal client: it
would sustain exactly ``concurrency / latency`` requests/s. Reported: sustained requests/s (the
first and last ``concurrency`` completions — connection set-up and ramp-down — excluded), the
fraction of ideal, and the client's CPU time per request (whole run, what limits one process).
Target: ≥ 90 % of ideal at 256.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msm_megatron.llm.backend import LLMRequest  # noqa: E402
from msm_megatron.llm.cache import CallCache  # noqa: E402
from msm_megatron.llm.http_backends import OpenAICompatBackend  # noqa: E402
from msm_megatron.llm.jobs import Job  # noqa: E402
from msm_megatron.llm.runner import CallRunner  # noqa: E402


def measure(url: str, concurrency: int, rounds: int, tmp: Path, tag: str) -> dict:
    """Run ``rounds × concurrency`` prompts; sustained rate over the middle of the run.

    Completion times are recorded as responses are parsed; the first and last ``concurrency``
    completions (connection set-up, ramp-down) are left out of the sustained rate.
    """
    n = concurrency * rounds
    backend = OpenAICompatBackend(f"{url}/v1", "bench", timeout_s=60,
                                  max_connections=max(concurrency, 1))
    runner = CallRunner(backend, CallCache(tmp / f"calls_{concurrency}.jsonl"),
                        concurrency=concurrency, progress=False)
    done: list[float] = []

    def parse(response):
        done.append(time.perf_counter())
        return response.text

    jobs = [Job(f"{tag}{i}", LLMRequest.user(f"bench {tag} prompt {i}"), parse)
            for i in range(n)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    results = runner.run(jobs, stage=f"c{concurrency}")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert all(r.ok for r in results) and runner.reports[-1].calls == n
    done.sort()
    window = done[n - concurrency - 1] - done[concurrency - 1]
    return {"n": n, "wall": wall, "rps": (n - 2 * concurrency) / window, "cpu_ms": 1000 * cpu / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 256])
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "tests.helpers.llm_server", "--port", "0",
                               "--latency", str(args.latency)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline().split()[1])}"
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for c in args.concurrency:
                rows.append((c, measure(url, c, args.rounds, Path(tmp), f"r{c}-")))
    finally:
        server.kill()
    print(f"machine: {platform.node()} {os.cpu_count()} cores; simulated latency "
          f"{args.latency:g} s per request; server tests/helpers/llm_server.py (threads)")
    print(f"{'concurrency':>11}{'requests':>10}{'req/s':>9}{'ideal':>9}{'of ideal':>10}"
          f"{'client CPU ms/req':>19}")
    for c, r in rows:
        ideal = c / args.latency
        print(f"{c:>11}{r['n']:>10}{r['rps']:>9.1f}{ideal:>9.1f}{r['rps'] / ideal:>10.1%}"
              f"{r['cpu_ms']:>19.2f}")


if __name__ == "__main__":
    main()
