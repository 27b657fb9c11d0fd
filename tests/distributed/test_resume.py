"""Resume equals an uninterrupted run: after SIGKILL, after a kill *during* a save, and at a
different TP/PP layout (stop signals: test_stop_signals.py).

An uninterrupted 6-step run (checkpoint every 2 steps) is the reference. Resumed trajectories
must match it bit-exactly on CPU fp32 at the same layout and to ≤ 1e-6 at another layout.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers.launch import metrics, train

pytestmark = pytest.mark.distributed

RUN = ["train.steps=6", "checkpoint.save_interval=2"]


def ckpt_state(run_dir):
    root = run_dir / "checkpoints"
    latest = (root / "latest_checkpointed_iteration.txt").read_text().strip()
    return int(latest), sorted(p.name for p in root.glob("iter_*"))


@pytest.fixture(scope="module")
def uninterrupted(toy_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_ref")
    train(toy_config, [f"train.run_dir={root}", *RUN], 1, root.with_suffix(".log"))
    ref = metrics(root)
    assert sorted(ref) == [1, 2, 3, 4, 5, 6]
    return ref


def assert_same(got: dict, ref: dict, steps, tol: float = 0.0):
    for step in steps:
        for key in ("loss", "grad_norm", "lr"):
            diff = abs(got[step][key] - ref[step][key])
            assert diff <= tol, (step, key, got[step][key], ref[step][key])


def test_sigkill_after_checkpoint_resumes_exactly(toy_config, uninterrupted, tmp_path):
    run = tmp_path / "run"
    code = train(toy_config, [f"train.run_dir={run}", *RUN], 1, tmp_path / "a.log",
                 env={"MSM_FAULT_KILL": "after_save:4"}, expect=None)
    assert code != 0  # killed
    assert ckpt_state(run)[0] == 4
    assert sorted(metrics(run)) == [1, 2, 3, 4]
    train(toy_config, [f"train.run_dir={run}", *RUN], 1, tmp_path / "b.log")
    got = metrics(run)
    assert_same(got, uninterrupted, range(1, 7))  # bit-exact


def test_async_save_then_sigkill_resumes_exactly(toy_config, uninterrupted, tmp_path):
    run = tmp_path / "run"
    async_run = [f"train.run_dir={run}", *RUN, "checkpoint.async_save=true"]
    train(toy_config, async_run, 1, tmp_path / "a.log", env={"MSM_FAULT_KILL": "after_save:4"},
          expect=None)
    latest, dirs = ckpt_state(run)
    assert latest == 4 and (run / "checkpoints" / "iter_0000004" / "msm_meta.json").exists()
    train(toy_config, async_run, 1, tmp_path / "b.log")
    assert_same(metrics(run), uninterrupted, range(1, 7))
    assert ckpt_state(run)[0] == 6


def test_kill_during_save_resumes_from_previous_checkpoint(toy_config, uninterrupted, tmp_path):
    run = tmp_path / "run"
    train(toy_config, [f"train.run_dir={run}", *RUN], 1, tmp_path / "a.log",
          env={"MSM_FAULT_KILL": "during_save:4"}, expect=None)
    latest, dirs = ckpt_state(run)
    assert latest == 2 and "iter_0000004" in dirs  # a partial iter_4 exists, "latest" did not move
    assert not (run / "checkpoints" / "iter_0000004" / "msm_meta.json").exists()
    log = tmp_path / "b.log"
    train(toy_config, [f"train.run_dir={run}", *RUN], 1, log)
    steps_rerun = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps_rerun == [1, 2, 3, 4, 3, 4, 5, 6]  # resumed after step 2
    assert_same(metrics(run), uninterrupted, range(1, 7))
    assert ckpt_state(run)[0] == 6


@pytest.mark.parametrize("overrides,nproc", [(["parallel.tp=2"], 2), (["parallel.pp=2"], 2)],
                         ids=["tp2", "pp2"])
def test_resume_at_different_layout(toy_config, uninterrupted, tmp_path, overrides, nproc):
    run = tmp_path / "run"
    train(toy_config, [f"train.run_dir={run}", *RUN], 1, tmp_path / "a.log",
          env={"MSM_FAULT_KILL": "after_save:4"}, expect=None)
    train(toy_config, [f"train.run_dir={run}", *RUN, *overrides], nproc, tmp_path / "b.log")
    meta = json.loads((run / "checkpoints" / "iter_0000006" / "msm_meta.json").read_text())
    assert meta["layout"]["world"] == nproc
    assert_same(metrics(run), uninterrupted, [5, 6], tol=1e-6)


def test_distributed_optimizer_resume_exact_and_flag_mismatch_refused(toy_config, tmp_path):
    ref_dir, run = tmp_path / "ref", tmp_path / "run"
    dist_opt = [*RUN, "parallel.distributed_optimizer=true"]
    train(toy_config, [f"train.run_dir={ref_dir}", *dist_opt], 2, tmp_path / "ref.log")
    train(toy_config, [f"train.run_dir={run}", *dist_opt], 2, tmp_path / "a.log",
          env={"MSM_FAULT_KILL": "after_save:4"}, expect=None)
    log = tmp_path / "b.log"
    code = train(toy_config, [f"train.run_dir={run}", *RUN], 2, log, expect=None)
    assert code != 0 and "parallel.distributed_optimizer=true" in log.read_text()
    train(toy_config, [f"train.run_dir={run}", *dist_opt, "parallel.tp=2"], 2, tmp_path / "c.log")
    assert_same(metrics(run), metrics(ref_dir), [5, 6], tol=1e-6)


def test_resume_with_longer_schedule_follows_new_config(toy_config, tmp_path):
    """Changing train.steps on resume is reported and the LR follows the new schedule."""
    run, ref = tmp_path / "run", tmp_path / "ref"
    train(toy_config, [f"train.run_dir={ref}", "train.steps=8"], 0, tmp_path / "ref.log")
    train(toy_config, [f"train.run_dir={run}", *RUN], 0, tmp_path / "a.log",
          env={"MSM_FAULT_KILL": "after_save:4"}, expect=None)
    log = tmp_path / "b.log"
    train(toy_config, [f"train.run_dir={run}", "train.steps=8", "checkpoint.save_interval=2"], 0,
          log)
    assert "resuming with a changed schedule (train.steps: 6 -> 8)" in log.read_text()
    got, want = metrics(run), metrics(ref)
    assert [got[s]["lr"] for s in range(5, 9)] == [want[s]["lr"] for s in range(5, 9)]
    # A reused run dir with resume disabled is refused instead of mixing two runs' checkpoints.
    code = train(toy_config, [f"train.run_dir={run}", "checkpoint.resume=false"], 0,
                 tmp_path / "c.log", expect=2)
    assert code == 2 and "already holds checkpoints" in (tmp_path / "c.log").read_text()


def test_packed_sft_resume_continues_with_the_next_row(sft_config, tmp_path):
    """Packed chat rows (THD, assistant-only loss) through the real data path: a resumed run
    trains on exactly the rows, in the order, of an uninterrupted one."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    steps = ["train.steps=6", "checkpoint.save_interval=2"]
    train(sft_config, [f"train.run_dir={ref}", *steps], 1, tmp_path / "ref.log")
    train(sft_config, [f"train.run_dir={run}", *steps], 1, tmp_path / "a.log",
          env={"MSM_FAULT_KILL": "after_save:4"}, expect=None)
    train(sft_config, [f"train.run_dir={run}", *steps], 1, tmp_path / "b.log")
    assert_same(metrics(run), metrics(ref), range(1, 7))
    assert metrics(ref)[6]["loss"] != metrics(ref)[1]["loss"]
