"""Start tests/helpers/llm_server.py as a real process on 127.0.0.1 and talk to it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from contextlib import contextmanager

from tests.helpers.launch import REPO, run_env


@contextmanager
def llm_server(*args: str):
    """Yields the server's base URL (``http://127.0.0.1:PORT``); kills it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.llm_server", "--port", "0", *args],
        cwd=REPO, env=run_env(), stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.kill()
        proc.wait()


def server_stats(base_url: str) -> dict:
    with urllib.request.urlopen(f"{base_url}/stats", timeout=10) as reply:
        return json.loads(reply.read())


def write_prompts(path, n: int, poison: set[int] = frozenset()) -> None:
    with open(path, "w") as f:
        for i in range(n):
            text = f"Write document number {i}." + (" POISON" if i in poison else "")
            f.write(json.dumps({"id": f"p{i}", "prompt": text}) + "\n")
