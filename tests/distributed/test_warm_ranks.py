"""The suite's warm-start harness (tests/helpers/warm_ranks.py) changes nothing but start-up: a
2-rank run forked from the warm process equals the same run under torchrun as its own
processes, bit for bit, and a failing rank ends the case with its exit code."""

from __future__ import annotations

import pytest

from tests.helpers.launch import finish, metrics, start
from tests.helpers.warm_ranks import run

pytestmark = pytest.mark.distributed


def test_a_warm_run_equals_a_fresh_torchrun_run(toy_config, tmp_path):
    overrides = ["parallel.tp=2", "train.steps=3"]
    fresh, warm = tmp_path / "fresh", tmp_path / "warm"
    assert finish(start(toy_config, [f"train.run_dir={fresh}", *overrides], 2,
                        tmp_path / "fresh.log")) == 0
    assert run(["train", str(toy_config), f"train.run_dir={warm}", *overrides], 2,
               tmp_path / "warm.log") == 0
    got, want = metrics(warm), metrics(fresh)
    assert sorted(got) == [1, 2, 3]
    for step in want:
        assert (got[step]["loss"], got[step]["grad_norm"]) == (want[step]["loss"],
                                                              want[step]["grad_norm"])
    assert "world 2 = tp 2" in (tmp_path / "warm.log").read_text()


def test_a_failing_rank_ends_the_case_with_its_code(toy_config, tmp_path):
    log = tmp_path / "bad.log"
    code = run(["train", str(toy_config), f"train.run_dir={tmp_path / 'bad'}",
                "parallel.tp=3"], 2, log)
    assert code == 2 and "parallel.tp=3" in log.read_text()
