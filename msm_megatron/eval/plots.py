"""PNG plots of a sweep summary: misalignment per condition and per scenario (bars with Wilson
95 % intervals, one colour per arm), and the data-efficiency curve (average misalignment
against AFT examples, log scale, one line per series, arms without a size as dashed lines),
and the forced-choice value rates (per arm, one bar per eval set's value, one panel per scoring).

matplotlib's object API only (no pyplot): no global backend or figure state.
"""

from __future__ import annotations

from pathlib import Path


def _drawn(rate: dict) -> dict:
    """A rate with nothing judged (``rate`` None) as an empty bar."""
    return rate if rate["rate"] is not None else {**rate, "rate": 0.0, "low": 0.0, "high": 0.0}


def _bars(ax, groups: list[str], arms: list[str], rate_of) -> None:
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        rates = [_drawn(rate_of(arm, g)) for g in groups]
        xs = [i + j * width for i in range(len(groups))]
        ys = [r["rate"] for r in rates]
        err = [[r["rate"] - r["low"] for r in rates], [r["high"] - r["rate"] for r in rates]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=arm)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
    ax.set(ylabel="misalignment (classifier)", ylim=(0, 1))
    ax.legend()


def plot_conditions(summary: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    arms = list(summary["arms"])
    conditions = list(summary["arms"][arms[0]]["conditions"])
    fig = Figure(figsize=(max(6, len(conditions) * 0.6), 4))
    ax = fig.subplots()
    metric = summary.get("headline", "classifier")
    _bars(ax, conditions, arms, lambda a, c: summary["arms"][a]["conditions"][c][metric])
    ax.set_ylabel(f"misalignment ({metric})")
    ax.set_xticklabels(["/".join(c.split("/")[:2]) for c in conditions], rotation=60,
                       ha="right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_scenarios(summary: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    arms = list(summary["arms"])
    scenarios = list(summary["arms"][arms[0]]["scenarios"])
    fig = Figure(figsize=(max(5, len(scenarios) * 1.5), 4))
    ax = fig.subplots()
    _bars(ax, scenarios, arms, lambda a, s: summary["arms"][a]["scenarios"][s])
    ax.set_xticklabels(scenarios)
    ax.set_title(f"misalignment per scenario ({summary.get('headline', 'classifier')}, "
                 "pooled over conditions)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_data_efficiency(curves: dict, path: Path, metric: str = "classifier") -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    nan = float("nan")  # a rate with nothing judged: a gap in the line
    for series, points in curves["curves"].items():
        ax.plot([p["aft_examples"] for p in points],
                [nan if p["rate"] is None else p["rate"] for p in points], marker="o",
                label=series)
    for arm, rate in curves["references"].items():
        if rate is None:
            continue
        ax.axhline(rate, linestyle="--", linewidth=1, color="grey")
        ax.annotate(arm, (0.01, rate), xycoords=("axes fraction", "data"), fontsize=8,
                    va="bottom")
    ax.set_xscale("log")
    ax.set(xlabel="alignment fine-tuning examples", ylabel=f"average misalignment ({metric})",
           ylim=(0, 1), title="data efficiency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_forced_choice(forced: dict, path: Path) -> None:
    """The paper's value-generalization figure: per arm (groups), the value-consistent choice
    rate on each eval set (bars, labelled by the value its answer key stands for) with Wilson
    95 % intervals; one panel per scoring."""
    from matplotlib.figure import Figure

    from msm_megatron.eval.forced_choice import SCORINGS

    arms = list(forced["arms"])
    sets = list(forced["sets"])  # in the summary's order
    by_label = {f"{forced['sets'][s]['value']} ({s})": s for s in sets}
    fig = Figure(figsize=(max(8, 2.2 * len(SCORINGS) * max(1, len(arms) / 2)), 3.8))
    axes = fig.subplots(1, len(SCORINGS), sharey=True)
    for ax, (scoring, title) in zip(axes, SCORINGS.items(), strict=True):
        _bars(ax, arms, list(by_label),
              lambda label, arm, sc=scoring: forced["arms"][arm][by_label[label]][sc])
        ax.set_xticklabels(arms, rotation=30, ha="right")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1.25)  # room for the legend above the bars
        ax.set_ylabel("value-consistent choice rate" if ax is axes[0] else "")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
