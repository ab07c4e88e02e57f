"""The annotation cost model and the cheapest-adequate-labelling verdict, on hand-made tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from forest_seg.analysis.cost import (
    BEST,
    BEYOND,
    OPEN,
    WITHIN,
    CostModel,
    labelling_groups,
    labelling_verdict,
    seeds_needed,
    with_label_costs,
)
from forest_seg.analysis.cost_plot import plot_miou_vs_label_cost
from forest_seg.errors import ConfigError


def trials_of(values: dict[int, list[float]], tiles: int = 100) -> pd.DataFrame:
    """COMPLETED trials, one per (points, seed): ``values[points][seed]`` is the val mIoU."""
    rows = [{"trial_id": f"{p}_{s}", "points": p, "seed": s, "lr": 1e-3, "status": "COMPLETED",
             "epochs": 3, "max_epochs": 3, "val_miou": v, "train_tiles": tiles}
            for p, seed_values in values.items() for s, v in enumerate(seed_values)]
    return pd.DataFrame(rows)


def test_cost_arithmetic():
    model = CostModel()
    assert model.seconds_per_tile(50) == 100.0  # 50 clicks x 2.0 s
    assert model.seconds_per_tile(0) == 239.7  # a dense mask
    assert model.hours(50, 360) == pytest.approx(10.0)  # 100 s x 360 tiles / 3600
    custom = CostModel(seconds_per_point=1.5, seconds_per_mask=600)
    assert custom.hours(0, 30) == pytest.approx(5.0)
    priced = with_label_costs(trials_of({10: [0.5], 0: [0.6]}, tiles=720), custom)
    assert priced["label_seconds_per_tile"].tolist() == [15.0, 600.0]
    assert priced["label_hours"].tolist() == pytest.approx([3.0, 120.0])


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf])
def test_cost_model_refuses_non_positive_seconds(bad):
    with pytest.raises(ConfigError, match="seconds-per-point"):
        CostModel(seconds_per_point=bad)


def test_hours_are_nan_without_tile_counts():
    priced = with_label_costs(trials_of({10: [0.5]}).drop(columns="train_tiles"), CostModel())
    assert priced["label_seconds_per_tile"].tolist() == [20.0]
    assert math.isnan(priced["label_hours"].iloc[0])


def test_resolved_verdict_names_the_cheapest_labelling_within_delta():
    dense = [0.70, 0.72, 0.68, 0.71, 0.69]
    fifty = [d - e for d, e in zip(dense, [0.010, 0.011, 0.009, 0.010, 0.010], strict=True)]
    ten = [d - 0.2 + e for d, e in zip(dense, [0.01, -0.01, 0.0, 0.005, -0.005], strict=True)]
    verdict = labelling_verdict(trials_of({0: dense, 50: fifty, 10: ten}))
    table = verdict.table.set_index("labelling")
    assert list(table.index) == ["10 points", "50 points", "dense"]  # ranked by cost
    assert table["label_hours"].tolist() == pytest.approx([20 * 100 / 3600, 100 * 100 / 3600,
                                                          239.7 * 100 / 3600])
    assert table.loc["dense", "status"] == BEST
    assert table.loc["50 points", "status"] == WITHIN
    assert table.loc["10 points", "status"] == BEYOND
    diffs = np.array([0.010, 0.011, 0.009, 0.010, 0.010])
    t = (diffs.mean() - 0.02) / (diffs.std(ddof=1) / math.sqrt(5))
    assert table.loc["50 points", "p_within"] == pytest.approx(stats.t.cdf(t, 4))
    assert verdict.cheapest == 50 and verdict.resolved
    assert "50 points" in verdict.text and "resolved" in verdict.text


def test_unresolved_verdict_says_so_and_estimates_the_seeds():
    dense = [0.70, 0.72, 0.68]
    ten = [0.70 - 0.03, 0.72 + 0.02, 0.68 - 0.02]  # paired diffs 0.03, -0.02, 0.02
    verdict = labelling_verdict(trials_of({0: dense, 10: ten}))
    row = verdict.table.set_index("labelling").loc["10 points"]
    assert row["status"] == OPEN
    assert not verdict.resolved and verdict.cheapest == 0
    assert verdict.text.startswith("not resolved")
    assert "10 points: +0.010 below the best; about" in verdict.text


def test_a_tie_goes_to_the_cheaper_labelling():
    same = [0.6, 0.65, 0.7]
    verdict = labelling_verdict(trials_of({0: same, 10: same}))
    assert verdict.cheapest == 10 and verdict.resolved
    assert verdict.table.set_index("labelling").loc["10 points", "status"] == BEST


def test_only_completed_trials_enter_the_verdict():
    trials = trials_of({0: [0.7, 0.7, 0.7], 10: [0.7, 0.7, 0.7]})
    trials.loc[trials["points"] == 10, "status"] = "EARLY_STOPPED"
    verdict = labelling_verdict(trials)
    row = verdict.table.set_index("labelling").loc["10 points"]
    assert row["n_seeds"] == 0 and row["status"] == OPEN
    assert verdict.cheapest == 0 and not verdict.resolved
    assert "needs at least 2 paired seeds" in verdict.text


def test_seeds_needed_by_hand():
    # t_{0.95,7} + t_{0.8,7} = 1.895 + 0.896 = 2.79 <= sqrt(8) = 2.83, while n = 7 falls short
    assert seeds_needed(0.01, 0.01, 0.05) == 8
    assert math.isinf(seeds_needed(0.01, 0.0, 0.05))
    assert math.isnan(seeds_needed(math.nan, 0.01, 0.05))


def test_delta_must_be_positive():
    with pytest.raises(ConfigError, match="--delta"):
        labelling_verdict(trials_of({0: [0.7, 0.7]}), delta=0)


def test_a_budget_buys_whole_tiles():
    model = CostModel()
    assert model.tiles_for(1.0, 50) == 36  # 3600 s / 100 s
    assert model.tiles_for(1.0, 0) == 15  # 3600 s / 239.7 s = 15.02
    assert model.tiles_for(0.5, 10) == 90  # 1800 s / 20 s
    with pytest.raises(ConfigError, match="--budget-hours"):
        model.tiles_for(0, 10)


def test_a_budget_study_gets_a_verdict_per_budget(tmp_path):
    # max_train_tiles follows from points and budget_hours, so it groups nothing: the trials
    # group by budget, and at each budget dense and 10 points are compared on paired seeds
    at_2h = trials_of({0: [0.60, 0.62, 0.61], 10: [0.50, 0.51, 0.49]})
    at_8h = trials_of({0: [0.70, 0.71, 0.72], 10: [0.70, 0.705, 0.715]})
    for frame, hours in ((at_2h, 2.0), (at_8h, 8.0)):
        frame["budget_hours"] = hours
        frame["max_train_tiles"] = frame["points"].map({0: 30, 10: 360}) * int(hours / 2)
        frame["trial_id"] = frame["trial_id"] + f"_{hours:g}h"
    groups = labelling_groups(pd.concat([at_2h, at_8h], ignore_index=True))
    assert [label for label, _ in groups] == ["budget_hours=2", "budget_hours=8"]
    verdicts = [labelling_verdict(group) for _, group in groups]
    # 2 h: dense leads by 0.11, so 10 points is shown worse by more than delta; 8 h: 10 points
    # is 0.0033 below (paired differences 0, 0.005, 0.005, sd 0.0029: t = (0.0033 - 0.02) /
    # (0.0029 / sqrt 3) = -10.0, one-sided p 0.005, Holm x2 0.010 < 0.05): within delta
    assert [v.cheapest for v in verdicts] == [0.0, 10.0]
    assert verdicts[0].resolved and verdicts[1].resolved
    assert verdicts[0].table.set_index("points").loc[10, "status"] == BEYOND
    assert verdicts[1].table.set_index("points").loc[10, "status"] == WITHIN
    assert verdicts[1].table.set_index("points").loc[10, "p_within_holm"] == pytest.approx(
        2 * stats.t.cdf(-10.0, df=2), rel=1e-6)
    # the plot puts each budget's labellings side by side, one x position per labelling
    plot = plot_miou_vs_label_cost([(label, v.table) for (label, _), v in
                                    zip(groups, verdicts, strict=True)],
                                   tmp_path / "cost.png", "val_miou", per_budget=True)
    assert plot.path is not None and plot.path.stat().st_size > 0
    skipped = plot_miou_vs_label_cost([("", verdicts[0].table.iloc[:1])],
                                      tmp_path / "one.png", "val_miou")
    assert skipped.path is None and "fewer than two labellings" in skipped.note


def test_no_labelling_section_when_labellings_never_share_a_group(tmp_path):
    # 10 points only at lr 1e-3, dense only at lr 1e-4: no group holds two labellings, so
    # the report has nothing to price against each other (and says nothing, not a stub)
    from forest_seg.analysis.report import _labelling_section

    trials = trials_of({10: [0.5, 0.52], 0: [0.6, 0.61]})
    trials["lr"] = trials["points"].map({10: 1e-3, 0: 1e-4})
    assert labelling_groups(trials) == []
    _, sections, plots = _labelling_section(trials, tmp_path, "val_miou", CostModel(), 0.02)
    assert sections == [] and plots == []
