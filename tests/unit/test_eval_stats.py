"""Wilson intervals against published values and an independent root-finding reference."""

from __future__ import annotations

import math

import pytest

from msm_megatron.eval.stats import Z95, difference, difference_or_none, mean_rate, wilson


def reference_wilson(k: int, n: int) -> tuple[float, float]:
    """The interval as the two solutions p of |k/n - p| = z·sqrt(p(1-p)/n), by bisection."""
    phat = k / n

    def gap(p):
        return abs(phat - p) - Z95 * math.sqrt(p * (1 - p) / n)

    def root(lo, hi):
        for _ in range(200):
            mid = (lo + hi) / 2
            if (gap(lo) > 0) == (gap(mid) > 0):
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    low = 0.0 if k == 0 else root(0.0, phat)
    high = 1.0 if k == n else root(phat, 1.0)
    return low, high


@pytest.mark.parametrize(("k", "n"), [(0, 20), (1, 29), (7, 20), (81, 263), (150, 300),
                                      (299, 300), (300, 300), (21, 300)])
def test_wilson_matches_reference(k, n):
    rate = wilson(k, n)
    low, high = reference_wilson(k, n)
    assert rate.low == pytest.approx(low, abs=1e-9) and rate.high == pytest.approx(high, abs=1e-9)


def test_wilson_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I (method 3 = Wilson score)
    assert (round(wilson(81, 263).low, 4), round(wilson(81, 263).high, 4)) == (0.2553, 0.3662)
    assert (round(wilson(15, 148).low, 4), round(wilson(15, 148).high, 4)) == (0.0624, 0.1605)
    assert (round(wilson(0, 20).low, 4), round(wilson(0, 20).high, 4)) == (0.0, 0.1611)


def test_difference_and_mean():
    a, b = wilson(56, 70), wilson(48, 80)
    d, low, high = difference(a, b)
    assert d == pytest.approx(0.2) and low < d < high and -1 <= low and high <= 1
    assert difference(wilson(0, 10), wilson(0, 10))[0] == 0
    assert mean_rate([wilson(1, 10), wilson(3, 10), wilson(0, 0)]) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        wilson(5, 3)


def test_probe_file_errors_name_line_and_field(tmp_path):
    from msm_megatron.config import ConfigError
    from msm_megatron.eval.values import load_probes

    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "x", "domain": "d", "question": "q", "A": "a", "B": "b", '
                    '"values": {"v": "A"}}\n{"id": "y", "domain": "d", "A": "a"}\n')
    with pytest.raises(ConfigError, match=r"p.jsonl:2: missing field\(s\) \['question', 'B'"):
        load_probes(path)
    path.write_text('{"id": "x", "domain": "d", "question": "q", "A": "a", "B": "b", '
                    '"values": {"v": "C"}}\n')
    with pytest.raises(ConfigError, match="p.jsonl:1: 'values' must map"):
        load_probes(path)


def test_cohen_kappa_identical_and_textbook_values():
    from msm_megatron.eval.stats import cohen_kappa

    same = [(True, True)] * 7 + [(False, False)] * 5
    assert cohen_kappa(same)["kappa"] == 1.0 and cohen_kappa(same)["kappa_defined"]
    constant = cohen_kappa([(True, True)] * 4)  # p_e = 1: 0/0, agreeing on everything
    assert constant["kappa"] == 1.0 and not constant["kappa_defined"]

    def table(yy, yn, ny, nn):
        return ([(True, True)] * yy + [(True, False)] * yn + [(False, True)] * ny
                + [(False, False)] * nn)

    # the two worked examples of the Wikipedia article "Cohen's kappa"
    first = cohen_kappa(table(20, 5, 10, 15))
    assert first["agreement"] == pytest.approx(0.7) and first["kappa"] == pytest.approx(0.4)
    assert first["confusion"] == {"yes_yes": 20, "yes_no": 5, "no_yes": 10, "no_no": 15}
    assert cohen_kappa(table(45, 15, 25, 15))["kappa"] == pytest.approx(0.1304, abs=1e-4)
    assert cohen_kappa(table(0, 10, 10, 0))["kappa"] == pytest.approx(-1.0)
    assert cohen_kappa([])["n"] == 0


def test_nothing_judged_is_none_and_the_summary_is_strict_json(tmp_path):
    """A rate of nothing is None (null in summary.json, "0 of N judged" in report.md), never
    NaN; the JSON writer refuses NaN outright."""
    import json

    from msm_megatron.eval.report import report_markdown, summarize, write_json
    from msm_megatron.eval.stats import cohen_kappa, rate_or_none

    assert rate_or_none(3, 4) == 0.75 and rate_or_none(0, 0) is None
    assert wilson(0, 0).value is None and wilson(0, 0).as_dict()["rate"] is None
    assert mean_rate([wilson(0, 0)]) is None and mean_rate([]) is None
    empty = cohen_kappa([])
    assert empty["kappa"] is None and empty["agreement"] is None
    with pytest.raises(ValueError):
        difference(wilson(0, 0), wilson(1, 2))
    rows = [{"condition": "murder/x", "scenario": "murder", "verdict": None, "harmful": False,
             "mechanical": False, "judge_failure": kind} for kind in
            ("unreachable", "no_verdict", "no_verdict")]
    summary = summarize({"a": rows, "b": rows})
    arm = summary["arms"]["a"]
    assert arm["average_classifier"] is None and arm["scenarios"]["murder"]["rate"] is None
    assert (arm["judge_unreachable"], arm["no_verdict"]) == (1, 2)
    cond = arm["conditions"]["murder/x"]
    assert (cond["judge_unreachable"], cond["no_verdict"], cond["samples"]) == (1, 2, 3)
    assert summary["differences"] == {}
    write_json(tmp_path / "s.json", summary)

    def no_constants(name):
        raise AssertionError(f"{name} in summary.json")

    json.loads((tmp_path / "s.json").read_text(), parse_constant=no_constants)
    text = report_markdown(summary, "quick", "Qwen")
    assert "nan" not in text.lower() and "average classifier rate 0 of 3 judged" in text
    assert "| murder/x | 0/0 |" in text and "| 1 | 2 |" in text
    with pytest.raises(ValueError):
        write_json(tmp_path / "bad.json", {"rate": float("nan")})


def test_judging_is_incomplete_on_any_unreachable_or_too_many_without_verdict():
    from msm_megatron.eval.judged import judging_incomplete
    from msm_megatron.eval.sweep_config import JudgeConfig
    from msm_megatron.llm.jobs import StageReport

    judge = JudgeConfig(base_url="http://127.0.0.1:8001/v1", max_failed_fraction=0.25)

    def report(unreachable, no_verdict, jobs=10):
        failures = ([{"id": "x", "error": "transport: timeout after 10s", "attempts": 1}]
                    * unreachable + [{"id": "y", "error": "content: no 'VERDICT'",
                                      "attempts": 3}] * no_verdict)
        return StageReport("judge (a)", jobs=jobs, succeeded=jobs - len(failures),
                           failures=failures)

    assert judging_incomplete("msm eval", [report(0, 2)], judge, "judge", "c") is None
    one = judging_incomplete("msm eval", [report(1, 0)], judge, "judge", "cache.jsonl")
    assert "1 judgement(s) could not be obtained" in one and "cache.jsonl" in one
    assert "judge.timeout_s" in one and "max_failed_fraction" not in one
    many = judging_incomplete("msm eval", [report(0, 3)], judge, "b", "c")
    assert "b.max_failed_fraction=0.25" in many and "b.model" in many
    assert "could not be obtained" not in many and "3 of 10 judgements are missing" in many


def test_difference_or_none():
    a, b = wilson(56, 70), wilson(48, 80)
    d, low, high = difference(a, b)
    assert difference_or_none(a, b) == {"difference": d, "low": low, "high": high}
    assert difference_or_none(wilson(0, 0), b) is None
    assert difference_or_none(a, wilson(0, 0)) is None
