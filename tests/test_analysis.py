"""forest_seg.analysis on small hand-made result tables with hand-computed answers."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest

from forest_seg.analysis import (
    ResultsError,
    compare_early_stopping,
    config_columns,
    holm,
    load_experiment,
    load_experiments,
    lr_instability,
    make_plots,
    mean_ci,
    paired_differences,
    paired_p_value,
    summarize,
    t_quantile,
    to_markdown,
)
from forest_seg.errors import ForestSegError

RESULT_COLS = ["status", "val_iou", "val_miou", "val_loss", "best_epoch", "best_val_iou",
               "best_val_miou", "best_val_loss", "epochs", "train_time_s"]
T2 = 4.302652729749464  # t_{0.975, 2}: the 95% two-sided quantile with 2 degrees of freedom


def trial(tid, points=50, lr=1e-4, seed=0, best=0.6, final=None, status="COMPLETED", epochs=4,
          max_epochs=4, alpha=None, **extra) -> dict:
    """One results.csv row; final val mIoU defaults to best - 0.01, IoUs to mIoU + 0.1."""
    final = best - 0.01 if final is None else final
    return {"trial_id": str(tid), "points": points, "lr": lr, "seed": seed,
            "point_strategy": "balanced", "alpha": alpha, "max_epochs": max_epochs, **extra,
            "status": status, "val_iou": final + 0.1, "val_miou": final, "val_loss": 0.5,
            "best_val_iou": best + 0.1, "best_val_miou": best, "epochs": epochs,
            "train_time_s": 10.0 * epochs}


def write_exp(path, rows, history=None):
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
    if history is not None:
        pd.DataFrame(history).to_csv(path / "history.csv", index=False)
    return path


def points_study() -> pd.DataFrame:
    """lr 1e-4; points 50/100/200 x seeds 0-2 and a single-seed dense reference (points=0)."""
    best = {50: [0.60, 0.62, 0.64], 100: [0.70, 0.71, 0.75], 200: [0.71, 0.69, 0.76]}
    rows = [trial(f"{p}-{s}", points=p, seed=s, best=v)
            for p, values in best.items() for s, v in enumerate(values)]
    rows.append(trial("dense-0", points=0, seed=0, best=0.80))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- t quantile, mean_ci
def t_cdf_central(q: float, df: int) -> float:
    """P(|T| <= q) by integrating the t density with the trapezoid rule (independent check)."""
    x = np.linspace(-q, q, 200_001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    pdf = np.exp(log_c) * (1 + x**2 / df) ** (-(df + 1) / 2)
    return float(np.sum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x)))


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 30, 35, 120])
def test_t_quantile_matches_the_t_distribution(df):
    assert t_cdf_central(t_quantile(df), df) == pytest.approx(0.95, abs=2e-4)


def test_t_quantile_known_values():
    # df = 2 has a closed form: P(|T| <= t) = t / sqrt(t^2 + 2) = q, so t = sqrt(2 q^2 / (1 - q^2));
    # q = 0.95 -> 4.3026527
    assert t_quantile(2) == pytest.approx(math.sqrt(2 * 0.95**2 / (1 - 0.95**2)), rel=1e-9)
    assert t_quantile(1) == pytest.approx(12.7062047, abs=1e-6)
    assert math.isnan(t_quantile(0))


def test_mean_ci_by_hand():
    # 0.60, 0.62, 0.64: mean 0.62; sd = sqrt((0.02^2 + 0 + 0.02^2) / 2) = 0.02;
    # half-width = 4.3026527 * 0.02 / sqrt(3) = 0.0496828
    s = mean_ci([0.60, 0.62, 0.64])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.62) and s["sd"] == pytest.approx(0.02)
    assert s["ci_lo"] == pytest.approx(0.62 - 0.0496828, abs=1e-6)
    assert s["ci_hi"] == pytest.approx(0.62 + 0.0496828, abs=1e-6)
    one = mean_ci([0.5, float("nan")])  # NaN (an ERROR trial) is left out -> a single value
    assert one["n"] == 1 and one["mean"] == 0.5
    assert math.isnan(one["sd"]) and math.isnan(one["ci_lo"]) and math.isnan(one["ci_hi"])


# --------------------------------------------------------------------------- p-values, Holm
def test_paired_t_test_on_three_known_differences():
    # differences 0.10, 0.09, 0.11: mean 0.1, sd 0.01, t = 0.1 / (0.01 / sqrt(3)) = 10 sqrt(3);
    # with 2 degrees of freedom P(|T| > t) = 1 - t / sqrt(t^2 + 2) = 1 - sqrt(300 / 302)
    assert paired_p_value([0.10, 0.09, 0.11]) == pytest.approx(1 - math.sqrt(300 / 302),
                                                               rel=1e-6)
    # -0.01, +0.02, -0.01: mean 0 -> t = 0 -> p = 1
    assert paired_p_value([-0.01, 0.02, -0.01]) == pytest.approx(1.0)
    assert paired_p_value([0.2, 0.2]) == 0.0 and paired_p_value([0.0, 0.0]) == 1.0
    assert math.isnan(paired_p_value([0.3, float("nan")]))  # one difference: no test


def test_holm_step_down_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03; 2 * 0.03 = 0.06; max(0.06, 1 * 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # capped at 1; NaN stays NaN and is not in the family (m = 2): 2 * 0.02 = 0.04, 0.7
    adjusted = holm([0.7, float("nan"), 0.02])
    assert adjusted[0] == pytest.approx(0.7) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])


# --------------------------------------------------------------------------- summaries
def test_summarize_means_intervals_and_single_seed_flag():
    summary = summarize(points_study()).set_index("points")
    assert list(summary.index) == [0, 50, 100, 200]
    assert summary.loc[50, "n_seeds"] == 3 and summary.loc[50, "at_epoch"] == 4
    # the headline is the final epoch's val mIoU: 0.59, 0.61, 0.63 (best - 0.01)
    assert summary.loc[50, "val_miou_mean"] == pytest.approx(0.61)
    assert summary.loc[50, "val_miou_sd"] == pytest.approx(0.02)
    assert summary.loc[50, "val_miou_ci_hi"] == pytest.approx(0.61 + 0.0496828, abs=1e-6)
    assert summary.loc[50, "best_val_miou_mean"] == pytest.approx(0.62)
    assert summary.loc[50, "best_val_miou_ci_hi"] == pytest.approx(0.6696828, abs=1e-6)
    assert summary.loc[50, "best_val_iou_mean"] == pytest.approx(0.72)
    # 100: 0.70, 0.71, 0.75 -> mean 0.72
    assert summary.loc[100, "best_val_miou_mean"] == pytest.approx(0.72)
    assert summary.loc[0, "n_seeds"] == 1 and bool(summary.loc[0, "inconclusive"])
    assert math.isnan(summary.loc[0, "val_miou_sd"])
    assert not summary.loc[[50, 100, 200], "inconclusive"].any()
    assert summary.loc[50, "config"] == "points=50"  # only varying columns label a config


def mixed_statuses() -> pd.DataFrame:
    """points=50: two COMPLETED seeds (6 epochs), one EARLY_STOPPED at 2, one DIVERGED at 3,
    one ERROR; points=10: two COMPLETED seeds."""
    rows = [trial("c0", seed=0, final=0.60, best=0.62, epochs=6, max_epochs=6),
            trial("c1", seed=1, final=0.70, best=0.72, epochs=6, max_epochs=6),
            trial("s2", seed=2, final=0.90, best=0.95, epochs=2, max_epochs=6,
                  status="EARLY_STOPPED"),
            trial("d3", seed=3, final=float("nan"), best=0.5, epochs=3, max_epochs=6,
                  status="DIVERGED"),
            trial("e4", seed=4, final=float("nan"), best=float("nan"), epochs=0, max_epochs=6,
                  status="ERROR"),
            trial("t0", points=10, seed=0, final=0.50, epochs=6, max_epochs=6),
            trial("t1", points=10, seed=1, final=0.54, epochs=6, max_epochs=6)]
    return pd.DataFrame(rows)


def test_no_mean_mixes_epoch_counts():
    summary = summarize(mixed_statuses()).set_index("points")
    fifty = summary.loc[50]
    # only the COMPLETED seeds at 6 epochs: (0.60 + 0.70) / 2; the early-stopped 0.90 at epoch
    # 2 is counted, never averaged in
    assert fifty["val_miou_mean"] == pytest.approx(0.65) and fifty["n_seeds"] == 2
    assert fifty["at_epoch"] == 6 and fifty["n_trials"] == 5
    assert (fifty["n_early_stopped"], fifty["n_diverged"], fifty["n_error"]) == (1, 1, 1)
    # the best-epoch numbers follow the same rule: (0.62 + 0.72) / 2, without the stopped 0.95
    assert fifty["best_val_miou_mean"] == pytest.approx(0.67)
    assert "common_epoch" not in summary.columns  # no history given


def test_asha_run_is_also_compared_at_the_common_epoch():
    trials = mixed_statuses()
    # val mIoU by epoch: c0 0.1 * e, c1 0.11 * e, s2 (2 epochs) 0.45 * e, t0 0.08 * e,
    # t1 0.09 * e; the diverged and errored trials are left out of the common epoch
    slopes = {"c0": 0.1, "c1": 0.11, "s2": 0.45, "d3": 0.2, "t0": 0.08, "t1": 0.09}
    history = pd.DataFrame([{"trial_id": t, "epoch": e, "val_miou": slope * e}
                            for t, slope in slopes.items()
                            for e in range(1, int(trials.set_index("trial_id").loc[t, "epochs"])
                                           + 1)])
    summary = summarize(trials, epochs=history).set_index("points")
    # every COMPLETED or EARLY_STOPPED trial reached epoch 2 (s2 stopped there)
    assert set(summary["common_epoch"]) == {2}
    fifty, ten = summary.loc[50], summary.loc[10]
    # points=50 at epoch 2: c0 0.2, c1 0.22, s2 0.9 -> mean 0.44; the diverged d3 is left out
    assert fifty["n_seeds_at_common"] == 3
    assert fifty["val_miou_at_common_mean"] == pytest.approx((0.2 + 0.22 + 0.9) / 3)
    assert fifty["val_miou_at_common_sd"] == pytest.approx(np.std([0.2, 0.22, 0.9], ddof=1))
    assert ten["val_miou_at_common_mean"] == pytest.approx(0.17)  # (0.16 + 0.18) / 2
    # the headline is unchanged: COMPLETED seeds at their final epoch
    assert fifty["val_miou_mean"] == pytest.approx(0.65)
    assert "best_val_miou_at_common_mean" not in summary.columns  # no such history column


def test_baselines_and_gain_over_the_colour_table():
    rows = [trial("a", seed=0, final=0.60, baseline_all_forest_miou=0.30,
                  baseline_colour_miou=0.50),
            trial("b", seed=1, final=0.70, baseline_all_forest_miou=0.32,
                  baseline_colour_miou=0.56),
            trial("c", seed=2, final=0.65, baseline_all_forest_miou=0.31,
                  baseline_colour_miou=0.52),
            trial("x", seed=3, final=0.99, status="EARLY_STOPPED", epochs=2,
                  baseline_all_forest_miou=0.0, baseline_colour_miou=0.0)]
    row = summarize(pd.DataFrame(rows)).iloc[0]
    assert row["baseline_all_forest_miou_mean"] == pytest.approx(0.31)
    assert row["baseline_colour_miou_mean"] == pytest.approx((0.50 + 0.56 + 0.52) / 3)
    # gains per seed 0.10, 0.14, 0.13: mean 0.1233333, sd 0.0208167,
    # half-width 4.3026527 * 0.0208167 / sqrt(3) = 0.0517118
    assert row["gain_over_colour_mean"] == pytest.approx(0.1233333, abs=1e-6)
    assert row["gain_over_colour_sd"] == pytest.approx(0.0208167, abs=1e-6)
    assert row["gain_over_colour_ci_lo"] == pytest.approx(0.1233333 - 0.0517118, abs=1e-6)
    old = summarize(points_study())  # written before baselines existed: no such columns
    assert not [c for c in old.columns if "baseline" in c or "gain" in c]


def test_missing_config_values_group_together():
    rows = [trial(1, seed=0, alpha=None, best=0.5), trial(2, seed=1, alpha=None, best=0.7),
            trial(3, seed=0, alpha=0.25, best=0.9)]
    summary = summarize(pd.DataFrame(rows))
    assert list(summary["config"]) == ["alpha=0.25", "alpha=None"]
    assert list(summary["n_seeds"]) == [1, 2]
    assert summary["best_val_miou_mean"].iloc[1] == pytest.approx(0.6)


def test_config_columns_are_generic():
    frame = pd.DataFrame([trial(1, head="fpn", train_loss=0.3, best_val_dice=0.4,
                                baseline_colour_miou=0.5, driver="grid")])
    assert config_columns(frame) == ["points", "lr", "point_strategy", "alpha", "max_epochs",
                                     "head"]
    assert "seed" in config_columns(frame, include_seed=True)


# --------------------------------------------------------------------------- paired differences
def test_paired_differences_by_seed():
    diffs = paired_differences(points_study())
    got = {(r.a, r.b): r for r in diffs.itertuples()}
    assert set(got) == {(100, 50), (200, 100), (0, 50), (0, 100), (0, 200)}
    # final val mIoU, 100 - 50 per seed: 0.10, 0.09, 0.11 -> mean 0.10, sd 0.01,
    # half-width 4.3026527 * 0.01 / sqrt(3) = 0.0248414 -> [0.0751586, 0.1248414];
    # p = 1 - sqrt(300 / 302) = 0.0033167 (see the t-test test above)
    clear = got[(100, 50)]
    assert clear.n_pairs == 3 and clear.mean_diff == pytest.approx(0.10)
    assert clear.sd_diff == pytest.approx(0.01)
    assert clear.ci_lo == pytest.approx(0.0751586, abs=1e-6)
    assert clear.ci_hi == pytest.approx(0.1248414, abs=1e-6)
    assert clear.p_value == pytest.approx(1 - math.sqrt(300 / 302), rel=1e-6)
    # the family holds the two comparisons with a p-value (dense pairs have one seed):
    # Holm: 2 * 0.0033167 = 0.0066334, then max(0.0066334, 1 * 1.0) = 1.0
    assert clear.p_holm == pytest.approx(2 * (1 - math.sqrt(300 / 302)), rel=1e-6)
    assert clear.verdict == "points=100 better"
    # 200 - 100 per seed: +0.01, -0.02, +0.01 -> mean 0 (p = 1), sd sqrt(0.0003) = 0.0173205,
    # half-width 4.3026527 * 0.0173205 / sqrt(3) = 0.0430265: the interval holds 0
    noise = got[(200, 100)]
    assert noise.mean_diff == pytest.approx(0.0, abs=1e-12)
    assert noise.ci_hi == pytest.approx(0.0430265, abs=1e-6)
    assert noise.p_value == pytest.approx(1.0) and noise.p_holm == pytest.approx(1.0)
    assert noise.verdict == "not resolved"
    # dense has one seed: one pair, 0.79 - 0.59
    dense = got[(0, 50)]
    assert dense.n_pairs == 1 and dense.mean_diff == pytest.approx(0.20)
    assert math.isnan(dense.p_value) and math.isnan(dense.p_holm)
    assert dense.verdict == "inconclusive (1 seed)"


def test_holm_turns_a_nominal_win_into_not_resolved():
    # With 2 degrees of freedom, p = 1 - t / sqrt(t^2 + 2) for t = mean / (sd / sqrt(3)).
    # 20 - 10 per seed: 0.10, 0.11, 0.12 (mean 0.11, sd 0.01): t = 19.0525589, p = 0.0027436;
    # 50 - 20: 0.035, 0.05, 0.065 (mean 0.05, sd 0.015): t = 5.7735027, p = 0.0287079 < 0.05;
    # 100 - 50: +0.01, -0.02, +0.01 (mean 0): p = 1
    base = {10: [0.50, 0.50, 0.50], 20: [0.60, 0.61, 0.62], 50: [0.635, 0.66, 0.685],
            100: [0.645, 0.64, 0.695]}
    rows = [trial(f"{p}-{s}", points=p, seed=s, final=v)
            for p, values in base.items() for s, v in enumerate(values)]
    got = {(r.a, r.b): r for r in paired_differences(pd.DataFrame(rows)).itertuples()}

    def p_of(t: float) -> float:
        return 1 - t / math.sqrt(t * t + 2)

    p_20, p_50 = p_of(0.11 / (0.01 / math.sqrt(3))), p_of(0.05 / (0.015 / math.sqrt(3)))
    assert got[(20, 10)].p_value == pytest.approx(p_20, rel=1e-6)
    assert got[(50, 20)].p_value == pytest.approx(p_50, rel=1e-6)
    assert got[(100, 50)].p_value == pytest.approx(1.0)
    # Holm over m = 3: 3 * p_20 = 0.0082; max(that, 2 * p_50) = 0.0574158; max(that, 1 * 1)
    assert got[(20, 10)].p_holm == pytest.approx(3 * p_20, rel=1e-6)
    assert got[(50, 20)].p_holm == pytest.approx(2 * p_50, rel=1e-6)
    assert got[(100, 50)].p_holm == pytest.approx(1.0)
    assert got[(20, 10)].verdict == "points=20 better"
    # nominally significant (p = 0.029), but not after the correction for three comparisons
    assert got[(50, 20)].p_value < 0.05 <= got[(50, 20)].p_holm
    assert got[(50, 20)].verdict == "not resolved"
    assert got[(100, 50)].verdict == "not resolved"


def test_paired_differences_worse_and_grouped_and_unpaired_seeds():
    rows = [trial(f"{lr}-{p}-{s}", points=p, lr=lr, seed=s, best=b)
            for lr, shift in ((1e-4, 0.0), (1e-3, -0.2))
            for p, base in ((10, 0.7), (50, 0.5))
            for s, b in enumerate([base + shift, base + shift + 0.01])]
    rows.append(trial("extra", points=10, lr=1e-4, seed=7, best=0.99))  # no partner at 50
    diffs = paired_differences(pd.DataFrame(rows))
    assert list(diffs["group"]) == ["lr=0.0001", "lr=0.001"]
    assert list(diffs["lr"]) == [1e-4, 1e-3]
    # 50 - 10 = -0.2 for both seeds (sd ~0 -> p ~0): the smaller count wins
    assert list(diffs["n_pairs"]) == [2, 2]
    assert diffs["mean_diff"].tolist() == pytest.approx([-0.2, -0.2])
    assert set(diffs["verdict"]) == {"points=10 better"}
    assert paired_differences(pd.DataFrame(rows), pairs="all").shape[0] == 2


def test_paired_differences_use_completed_trials_only():
    rows = [trial("a0", points=10, seed=0, final=0.5), trial("a1", points=10, seed=1, final=0.5),
            trial("b0", points=50, seed=0, final=0.9, status="EARLY_STOPPED", epochs=1),
            trial("b1", points=50, seed=1, final=0.6)]
    row = paired_differences(pd.DataFrame(rows)).iloc[0]
    # seed 0 at points=50 stopped after 1 epoch: only seed 1 pairs (0.6 - 0.5)
    assert row.n_pairs == 1 and row.mean_diff == pytest.approx(0.1)


def test_learning_rates_of_a_grid_are_compared_and_a_searchs_are_not(tmp_path):
    from forest_seg.analysis import analyze

    grid = [trial(f"{lr}-{s}", lr=lr, seed=s, final=0.5 + 0.02 * s + (lr == 1e-3) * 0.1)
            for lr in (1e-3, 1e-4) for s in range(3)]
    result = analyze(pd.DataFrame(grid), None, tmp_path / "grid")
    assert "## Learning rates (paired by seed" in result.markdown
    row = result.factor_differences["lr"].iloc[0]
    assert (row.a, row.b, row.n_pairs) == (1e-3, 1e-4, 3)
    assert row.mean_diff == pytest.approx(0.1) and row.verdict == "lr=0.001 better"
    search = [trial(f"s{i}", lr=10.0 ** -(2 + i / 4), seed=0, final=0.5) for i in range(7)]
    report = analyze(pd.DataFrame(search), None, tmp_path / "search").markdown
    assert "## Learning rates" not in report  # 7 sampled lrs: a search, no all-pairs table


def test_heads_and_encoder_stages_are_factors(tmp_path):
    from forest_seg.analysis import analyze

    rows = [trial(f"{h}-{k}-{s}", head=h, encoder_stages=k, seed=s, final=v + 0.01 * s)
            for h, k, v in (("linear", 2, 0.5), ("unet", 2, 0.6), ("linear", 4, 0.55),
                            ("unet", 4, 0.58))
            for s in range(3)]
    report = analyze(pd.DataFrame(rows), None, tmp_path).markdown
    assert "## Heads (paired by seed" in report and "## Encoder stages (paired by seed" in report
    assert "## Point strategies" not in report
    heads = paired_differences(pd.DataFrame(rows), factor="head", pairs="all")
    assert list(heads["group"]) == ["encoder_stages=2", "encoder_stages=4"]
    assert (list(heads["a"]), list(heads["b"])) == (["linear"] * 2, ["unet"] * 2)
    assert heads["mean_diff"].tolist() == pytest.approx([-0.1, -0.03])
    assert set(heads["verdict"]) == {"head=unet better"}  # equal per-seed gaps: p ~0
    stages = paired_differences(pd.DataFrame(rows), factor="encoder_stages")
    assert list(stages["group"]) == ["head=linear", "head=unet"]
    assert (list(stages["a"]), list(stages["b"])) == ([4, 4], [2, 2])
    assert stages["mean_diff"].tolist() == pytest.approx([0.05, -0.02])


# --------------------------------------------------------------------------- lr instability
def test_lr_instability_by_hand():
    rows = [trial("a", lr=1e-3, seed=0, best=0.55, final=0.5, epochs=3, max_epochs=3),
            trial("f", lr=1e-3, seed=3, best=0.42, final=0.4, epochs=3, max_epochs=3),
            trial("b", lr=1e-3, seed=1, best=0.3, final=0.3, status="EARLY_STOPPED", epochs=2,
                  max_epochs=3),
            trial("c", lr=1e-3, seed=2, best=0.2, final=float("nan"), status="DIVERGED",
                  epochs=2, max_epochs=3),
            trial("d", lr=1e-4, seed=0, best=0.62, final=0.6, epochs=3, max_epochs=3),
            trial("e", lr=1e-4, seed=1, best=0.64, final=0.64, epochs=3, max_epochs=3)]
    losses = {"a": [1.0, 0.5, 1.5], "f": [1.0, 0.9, 1.2], "b": [1.0, 0.8],
              "c": [1.0, float("inf")], "d": [1.0, 0.9, 0.8], "e": [1.0, 0.9, 0.85]}
    history = pd.DataFrame([{"trial_id": t, "epoch": i + 1, "val_loss": v, "val_miou": 0.5}
                            for t, vs in losses.items() for i, v in enumerate(vs)])
    table = lr_instability(pd.DataFrame(rows), history)
    assert set(table["group"]) == {"all trials"}  # nothing else varies: one group
    table = table.set_index("lr")
    assert list(table.index) == [1e-4, 1e-3]
    hi = table.loc[1e-3]
    assert hi["n_trials"] == 4 and hi["n_completed"] == 2
    assert hi["divergence_rate"] == pytest.approx(1 / 4)
    assert hi["early_stop_rate"] == pytest.approx(1 / 4)
    # a: |0.5-1.0|, |1.5-0.5| -> 0.75; f: (0.1 + 0.3) / 2 = 0.2; b: 0.2; c: only one finite
    # loss -> left out
    assert hi["volatility"] == pytest.approx((0.75 + 0.2 + 0.2) / 3)
    # over the COMPLETED seeds only (a, f): the early-stopped b ran fewer epochs
    assert hi["seed_sd"] == pytest.approx(np.std([0.5, 0.4], ddof=1))
    assert hi["best_last_gap"] == pytest.approx((0.05 + 0.02) / 2)
    lo = table.loc[1e-4]
    assert lo["divergence_rate"] == 0 and lo["early_stop_rate"] == 0
    assert lo["volatility"] == pytest.approx((0.1 + 0.075) / 2)  # d: 0.1; e: (0.1 + 0.05) / 2
    assert lo["seed_sd"] == pytest.approx(np.std([0.6, 0.64], ddof=1))
    assert lo["best_last_gap"] == pytest.approx(0.01)


def test_lr_instability_compares_lrs_within_matched_configurations_only():
    # points=10 diverges at lr 1e-3, points=50 does not; the unet head only runs at points=50
    rows = [trial("p10-hi", points=10, lr=1e-3, status="DIVERGED", final=float("nan")),
            trial("p10-lo", points=10, lr=1e-4, final=0.5),
            trial("p50-hi", points=50, lr=1e-3, final=0.6),
            trial("p50-lo", points=50, lr=1e-4, final=0.62),
            trial("unet-hi", points=50, lr=1e-3, head="unet", final=0.7),
            trial("unet-lo", points=50, lr=1e-4, head="unet", final=0.72)]
    frame = pd.DataFrame(rows)
    frame.loc[:3, "head"] = "linear"
    table = lr_instability(frame)
    assert list(zip(table["group"], table["lr"], strict=True)) == [
        ("points=10, head=linear", 1e-4), ("points=10, head=linear", 1e-3),
        ("points=50, head=linear", 1e-4), ("points=50, head=linear", 1e-3),
        ("points=50, head=unet", 1e-4), ("points=50, head=unet", 1e-3)]
    # lr 1e-3 diverges in one of three groups: never pooled into a 1/3 rate
    assert table["divergence_rate"].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert list(table["points"]) == [10, 10, 50, 50, 50, 50]
    assert table["n_trials"].tolist() == [1] * 6


# --------------------------------------------------------------------------- ASHA vs FIFO
def asha_fifo(asha_keeps: float):
    """FIFO: 4 trials x 4 epochs = 16; ASHA: 4 + 4 + 1 + 1 = 10 trial-epochs, running the
    seeds of lr ``asha_keeps`` to the end and stopping the other lr after one epoch."""
    fifo = [trial(f"f{i}", lr=lr, seed=s, best=b, epochs=4)
            for i, (lr, s, b) in enumerate([(1e-3, 0, 0.60), (1e-3, 1, 0.62),
                                            (1e-4, 0, 0.64), (1e-4, 1, 0.66)])]
    asha = [trial(f"a{i}", lr=lr, seed=s, best=b, epochs=4) if lr == asha_keeps else
            trial(f"a{i}", lr=lr, seed=s, best=b - 0.2, epochs=1, status="EARLY_STOPPED")
            for i, (lr, s, b) in enumerate([(1e-3, 0, 0.60), (1e-3, 1, 0.62),
                                            (1e-4, 0, 0.64), (1e-4, 1, 0.66)])]
    return pd.DataFrame(asha), pd.DataFrame(fifo)


def test_asha_savings_and_regret():
    asha, fifo = asha_fifo(asha_keeps=1e-3)
    r = compare_early_stopping(asha, fifo)
    assert (r["asha_trial_epochs"], r["fifo_trial_epochs"]) == (10, 16)
    assert r["ratio"] == pytest.approx(0.625) and r["saved_fraction"] == pytest.approx(0.375)
    # final val mIoU (best - 0.01): ASHA ran only lr 1e-3 to the end (mean 0.60), so that is
    # its choice; FIFO picks lr 1e-4 (0.64 > 0.60)
    assert r["asha_best"] == {"lr": 1e-3} and r["fifo_best"] == {"lr": 1e-4}
    assert not r["same_best"]
    assert r["asha_best_score"] == pytest.approx(0.60)
    assert r["regret"] == pytest.approx(0.64 - 0.60)


def test_asha_same_best_has_no_regret():
    asha, fifo = asha_fifo(asha_keeps=1e-4)
    r = compare_early_stopping(asha, fifo)
    assert r["asha_best"] == {"lr": 1e-4} and r["asha_best_score"] == pytest.approx(0.64)
    assert r["same_best"] and r["regret"] == 0 and r["saved_fraction"] == pytest.approx(0.375)


# --------------------------------------------------------------------------- loading
def history_rows(rows):
    """history.csv rows: epoch e has val_miou = best - 0.05 * (epochs - e)."""
    out = []
    for r in rows:
        for e in range(1, int(r["epochs"]) + 1):
            diverged = r["status"] == "DIVERGED" and e == r["epochs"]
            out.append({"trial_id": r["trial_id"], "epoch": e, "train_loss": 1.0 / e,
                        "val_loss": float("inf") if diverged else 1.0 / e,
                        "val_iou": r["best_val_iou"] - 0.05 * (r["epochs"] - e),
                        "val_miou": r["best_val_miou"] - 0.05 * (r["epochs"] - e),
                        "lr": r["lr"], "diverged": diverged})
    return out


def test_load_csv_experiment(tmp_path):
    rows = points_study().to_dict("records")
    write_exp(tmp_path / "exp", rows, history_rows(rows))
    trials, epochs = load_experiment(tmp_path / "exp")
    assert len(trials) == 10 and trials["trial_id"].is_unique
    assert trials["alpha"].isna().all() and trials["epochs"].dtype.kind == "i"
    assert len(epochs) == 40 and epochs["diverged"].dtype == bool
    assert list(epochs.columns[:2]) == ["trial_id", "epoch"]


def test_load_several_dirs_adds_experiment_and_keeps_ids_unique(tmp_path):
    rows = points_study().to_dict("records")
    more = [{**r, "seed": r["seed"] + 5} for r in rows[:2]]  # same trial ids, new seeds
    write_exp(tmp_path / "a" / "grid", rows, history_rows(rows))
    write_exp(tmp_path / "b" / "grid", more, history_rows(more))
    trials, epochs = load_experiments([tmp_path / "a" / "grid", tmp_path / "b" / "grid"])
    assert list(trials["experiment"].unique()) == ["grid", "grid#2"]
    assert not trials.duplicated(["experiment", "trial_id"]).any()
    assert len(trials) == 12 and set(epochs["experiment"]) == {"grid", "grid#2"}
    assert trials.attrs["duplicates_dropped"] == 0
    with pytest.raises(ResultsError, match="given twice"):
        load_experiments([tmp_path / "a" / "grid", tmp_path / "a" / "grid"])


def test_pooling_two_identical_dirs_counts_each_seed_once(tmp_path, caplog):
    rows = points_study().to_dict("records")
    one = write_exp(tmp_path / "a" / "grid", rows, history_rows(rows))
    running = {"trial_id": "running", "epoch": 1}  # a trial of the copy with no results row
    copy = write_exp(tmp_path / "b" / "grid", rows, history_rows(rows) + [running])
    single, single_epochs = load_experiments([one])
    with caplog.at_level("WARNING", logger="forest_seg.analysis.load"):
        pooled, pooled_epochs = load_experiments([one, copy])
    assert pooled.attrs["duplicates_dropped"] == 10 and "dropped 10 duplicate" in caplog.text
    assert len(pooled) == 10 and set(pooled["experiment"]) == {"grid"}  # the first kept
    # the copies' history goes too; the unfinished trial's stays (the report counts it)
    assert len(single_epochs) == 40 and len(pooled_epochs) == 41
    assert pooled_epochs.loc[pooled_epochs["experiment"] == "grid#2", "trial_id"].tolist() == [
        "running"]
    pd.testing.assert_frame_equal(summarize(pooled, epochs=pooled_epochs),
                                  summarize(single, epochs=single_epochs))
    pd.testing.assert_frame_equal(paired_differences(pooled), paired_differences(single))
    # a trial that differs in any config column is a different run, not a copy
    other = [{**r, "alpha": 0.25} for r in rows[:3]]
    more, _ = load_experiments([one, write_exp(tmp_path / "c" / "grid", other)])
    assert len(more) == 13 and more.attrs["duplicates_dropped"] == 0


def test_duplicates_in_a_frame_are_never_extra_seeds():
    rows = [trial("a", seed=0, final=0.5), trial("b", seed=1, final=0.7),
            trial("a-copy", seed=0, final=0.5)]
    summary = summarize(pd.DataFrame(rows))
    assert summary.loc[0, "n_seeds"] == 2 and summary.loc[0, "n_trials"] == 2
    assert summary.loc[0, "val_miou_mean"] == pytest.approx(0.6)


def write_ray_trial(exp_dir, folder, params, rows, error=False):
    trial_dir = exp_dir / folder
    trial_dir.mkdir(parents=True)
    (trial_dir / "params.json").write_text(json.dumps(params))
    lines = []
    for i, row in enumerate(rows, start=1):
        ray_row = {**row, "training_iteration": i, "done": i == len(rows),
                   "time_total_s": 10.0 * i, "time_this_iter_s": 10.0, "timestamp": 1700000000,
                   "hostname": "node0", "config": params}
        lines.append(json.dumps(ray_row))  # json writes inf as Infinity, as Ray does
    (trial_dir / "result.json").write_text("\n".join(lines) + ("\n" if lines else ""))
    if error:
        (trial_dir / "error.txt").write_text("RuntimeError: CUDA out of memory")


def test_ray_fallback_gives_the_same_frames_as_the_csvs(tmp_path):
    rows = [trial("abc12_00000", seed=0, best=0.6, epochs=3, max_epochs=3),
            trial("abc12_00001", seed=1, best=0.4, epochs=1, max_epochs=3,
                  status="EARLY_STOPPED"),
            trial("abc12_00002", seed=2, best=0.3, epochs=2, max_epochs=3, status="DIVERGED")]
    history = history_rows(rows)
    for r in rows:  # final metrics = last epoch's, as the drivers write them; val mIoU
        last = [h for h in history if h["trial_id"] == r["trial_id"]][-1]  # peaks at the last
        r.update(val_iou=last["val_iou"], val_miou=last["val_miou"],
                 val_loss=last["val_loss"], train_time_s=10.0 * r["epochs"],
                 best_epoch=r["epochs"], best_val_loss=last["val_loss"],
                 best_train_loss=last["train_loss"])
    errored = trial("abc12_00003", seed=3, epochs=0, max_epochs=3, status="ERROR")
    errored.update({k: float("nan") for k in RESULT_COLS[1:] if k != "epochs"})
    errored["best_train_loss"] = float("nan")
    errored["train_time_s"] = 0.0  # no epoch reported: the sum of no epoch times
    errored["error"] = "RuntimeError: CUDA out of memory"  # error.txt's last line
    rows.append(errored)
    csv_dir = write_exp(tmp_path / "csv", rows, history)

    ray_dir = tmp_path / "ray"
    config_keys = ["points", "lr", "seed", "point_strategy", "alpha"]
    for r in rows:
        params = {k: r[k] for k in config_keys} | {"epochs": r["max_epochs"]}
        params = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                  for k, v in params.items()}
        result = [{k: v for k, v in h.items()} for h in history if h["trial_id"] == r["trial_id"]]
        write_ray_trial(ray_dir, f"trainable_{r['trial_id']}_{r['seed']}_lr=0.0001",
                        params, result, error=r["status"] == "ERROR")
    (ray_dir / "tuner.pkl").write_bytes(b"not a trial")

    csv_trials, csv_epochs = load_experiment(csv_dir)
    ray_trials, ray_epochs = load_experiment(ray_dir)
    pd.testing.assert_frame_equal(ray_trials, csv_trials)
    pd.testing.assert_frame_equal(ray_epochs, csv_epochs)
    assert list(ray_trials["status"]) == ["COMPLETED", "EARLY_STOPPED", "DIVERGED", "ERROR"]
    assert list(ray_trials["epochs"]) == [3, 1, 2, 0]


def test_ray_fallback_tolerates_a_truncated_last_line(tmp_path):
    params = {"points": 50, "lr": 1e-4, "seed": 0, "epochs": 5}
    write_ray_trial(tmp_path, "trainable_abc12_00000_0", params,
                    [{"epoch": 1, "val_miou": 0.3, "val_iou": 0.4, "val_loss": 0.9,
                      "diverged": False}])
    with open(tmp_path / "trainable_abc12_00000_0" / "result.json", "a") as fh:
        fh.write('{"epoch": 2, "val_mi')  # the process died mid-write
    trials, epochs = load_experiment(tmp_path)
    assert trials.loc[0, "status"] == "EARLY_STOPPED" and trials.loc[0, "epochs"] == 1
    assert trials.loc[0, "max_epochs"] == 5 and len(epochs) == 1


def test_ray_fallback_keeps_the_last_report_of_an_epoch_after_a_retry(tmp_path):
    params = {"points": 50, "lr": 1e-4, "seed": 0, "epochs": 3}
    first = [{"epoch": e, "val_miou": 0.1 * e, "val_iou": 0.2, "val_loss": 1.0,
              "diverged": False} for e in (1, 2, 3)]
    # the worker died after epoch 3 and the trial restarted from its epoch-1 checkpoint
    retry = [{"epoch": e, "val_miou": 0.1 * e + 0.05, "val_iou": 0.3, "val_loss": 0.9,
              "diverged": False} for e in (2, 3)]
    write_ray_trial(tmp_path, "trainable_abc12_00000_0", params, first + retry)
    trials, epochs = load_experiment(tmp_path)
    assert list(epochs["epoch"]) == [1, 2, 3]
    assert epochs["val_miou"].tolist() == pytest.approx([0.1, 0.25, 0.35])
    row = trials.iloc[0]
    assert row["epochs"] == 3 and row["status"] == "COMPLETED"
    assert row["val_miou"] == pytest.approx(0.35) and row["best_epoch"] == 3


def test_missing_dir_and_missing_results_are_clear_errors(tmp_path):
    with pytest.raises(ResultsError, match="not found"):
        load_experiment(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ForestSegError, match=r"empty: no results\.csv"):
        load_experiment(tmp_path / "empty")
    pd.DataFrame({"trial_id": ["1"], "points": [50]}).to_csv(tmp_path / "results.csv")
    with pytest.raises(ResultsError, match="missing column"):
        load_experiment(tmp_path)


def cut_mid_number(path, column):
    """Cut ``path`` inside the last row's ``column`` value (as a crash mid-write would)."""
    text = path.read_text()
    header, *rows = text.splitlines(keepends=True)
    k = header.rstrip("\n").split(",").index(column)
    start = len(text) - len(rows[-1])
    cut = start + len(",".join(rows[-1].split(",")[:k])) + 3  # comma and two characters
    path.write_text(text[:cut])
    return text[cut - 3:cut]


def test_results_cut_mid_number_is_refused_naming_the_line(tmp_path):
    rows = points_study().to_dict("records")
    exp = write_exp(tmp_path / "exp", rows, history_rows(rows))
    assert cut_mid_number(exp / "results.csv", "best_val_miou") == ",0."  # "0." parses
    with pytest.raises(ResultsError) as err:
        load_experiment(exp)
    assert f"{exp / 'results.csv'} line 11: " in str(err.value)  # header + 10 rows
    assert "fields, the header has" in str(err.value)


def test_a_file_cut_in_its_last_column_is_refused(tmp_path):
    rows = points_study().to_dict("records")
    exp = write_exp(tmp_path / "exp", rows, history_rows(rows))
    cut_mid_number(exp / "history.csv", list(history_rows(rows)[0])[-1])  # diverged: "Fa"
    with pytest.raises(ResultsError, match=r"history\.csv line 41: the file ends mid-line"):
        load_experiment(exp)


@pytest.mark.parametrize(("file", "change", "expected"), [
    ("results.csv", {"val_miou": "0.6x"}, "line 4: val_miou='0.6x' is not a number"),
    ("results.csv", {"epochs": "four"}, "line 4: epochs='four' is not a number"),
    ("results.csv", {"status": "RUNNING"}, "line 4: status='RUNNING' is not one of COMPLETED"),
    ("results.csv", {"trial_id": None}, "line 4: trial_id is empty"),
    ("history.csv", {"epoch": None}, "line 4: epoch is empty"),
    ("history.csv", {"val_loss": "n/a!"}, "line 4: val_loss='n/a!' is not a number"),
])
def test_malformed_values_are_refused_naming_file_line_and_column(tmp_path, file, change,
                                                                   expected):
    rows = points_study().to_dict("records")
    history = history_rows(rows)
    target = rows if file == "results.csv" else history
    target[2] = {**target[2], **change}  # the third row: line 4
    exp = write_exp(tmp_path / "exp", rows, history)
    with pytest.raises(ResultsError) as err:
        load_experiment(exp)
    assert str(err.value).startswith(f"{exp / file} {expected}")


def test_a_broken_results_file_is_rebuilt_from_ray_folders_and_said(tmp_path, caplog):
    params = {"points": 50, "lr": 1e-4, "seed": 0, "epochs": 2}
    epochs = [{"epoch": e, "val_miou": 0.3 * e, "val_iou": 0.4, "val_loss": 0.9,
               "diverged": False} for e in (1, 2)]
    write_ray_trial(tmp_path, "trainable_abc12_00000_0", params, epochs)
    ray_trials, ray_epochs = load_experiment(tmp_path)
    row = trial("abc12_00000", best=0.6, epochs=2, max_epochs=2)
    write_exp(tmp_path, [row], history_rows([row]))
    cut_mid_number(tmp_path / "results.csv", "best_val_miou")
    with caplog.at_level("WARNING", logger="forest_seg.analysis.load"):
        trials, history = load_experiment(tmp_path)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "results.csv line 2: " in warnings[0].getMessage()
    assert "rebuilt results.csv from Ray Tune's trial folders" in warnings[0].getMessage()
    pd.testing.assert_frame_equal(trials, ray_trials)
    assert trials.loc[0, "best_val_miou"] == pytest.approx(0.6) and trials.loc[0, "epochs"] == 2
    assert len(history) == 2  # the intact history.csv is still used


def test_a_byte_order_mark_and_crlf_lines_are_read(tmp_path):
    rows = points_study().to_dict("records")
    exp = write_exp(tmp_path / "exp", rows)
    text = (exp / "results.csv").read_text()
    (exp / "results.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    trials, _ = load_experiment(exp)
    assert len(trials) == 10 and "trial_id" in trials.columns


# --------------------------------------------------------------------------- markdown, plots
def test_to_markdown_without_tabulate():
    frame = pd.DataFrame({"name": ["a|b", "c"], "x": [0.5, float("nan")], "ok": [True, False]})
    lines = to_markdown(frame, floatfmt=".2f").splitlines()
    assert lines[0] == "| name |    x | ok  |"
    assert lines[1] == "|------|-----:|-----|"
    assert lines[2] == "| a\\|b | 0.50 | yes |"
    assert lines[3] == "| c    |  n/a | no  |"


def test_plots_are_written_or_skipped_with_a_reason(tmp_path):
    rows = points_study().to_dict("records")
    rows[1].update(status="EARLY_STOPPED", epochs=2)
    trials = pd.DataFrame(rows)
    plots = {p.name: p for p in make_plots(trials, pd.DataFrame(history_rows(rows)), tmp_path)}
    for name in ("miou_vs_points", "learning_curves", "asha_stops"):
        assert plots[name].path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots["miou_vs_lr"].path is None and "single value" in plots["miou_vs_lr"].note
    assert "matplotlib.pyplot" not in sys.modules  # the Agg canvas is used, not pyplot


def test_report_explains_inconclusive_and_not_resolved(tmp_path):
    from forest_seg.analysis import analyze

    result = analyze(points_study(), None, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert report == result.markdown
    notes = "\n".join(result.notes)
    assert "1 configuration(s) rest on fewer than two COMPLETED seeds (points=0)" in notes
    assert "points=200 vs points=100: difference " in notes  # mean 0, CI holds 0
    assert "not resolved. This does not show that either is better, nor that they are " \
           "equal" in notes
    assert "points=100 vs points=50: points=100 better" in notes
    assert "Holm-adjusted p = 0.00663" in notes  # 2 * (1 - sqrt(300 / 302))
    assert "within noise" not in report
    # the headline is the final val mIoU; points=50: 0.61 +- 4.3026527 * 0.02 / sqrt(3)
    assert "| 0.6100 ± 0.0497" in report and "metric: `val_miou` (final val mIoU)" in report
    # best-epoch numbers only with the optimistic label
    assert "best epoch val mIoU (optimistic: picked on validation) (95% CI)" in report
    assert "| best_val_miou" not in report
    assert "inconclusive (< 2 COMPLETED seeds)" in report
    assert "`learning_curves.png` skipped: no per-epoch history" in report
    assert "`asha_stops.png` skipped" in report
    assert "## Baselines" in report and "Not recorded: these trials have no" in report
    assert "split=random" not in report  # no split column: nothing to warn about


def test_report_baselines_split_warning_and_heads(tmp_path):
    from forest_seg.analysis import analyze

    rows = [trial(f"{h}-{s}", head=h, seed=s, final=v, split="random",
                  baseline_all_forest_miou=0.3, baseline_colour_miou=c)
            for h, values in (("linear", [(0.60, 0.50), (0.62, 0.50), (0.64, 0.51)]),
                              ("unet", [(0.70, 0.50), (0.73, 0.50), (0.74, 0.51)]))
            for s, (v, c) in enumerate(values)]
    result = analyze(pd.DataFrame(rows), None, tmp_path)
    report = result.markdown
    # linear: gains 0.10, 0.12, 0.13 -> +0.1167, sd 0.0152753, half-width 0.0379460
    section = report.split("## Baselines")[1].split("\n## ")[0]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in section.splitlines()
             if ln.startswith("| linear")]
    # head, seeds, network final mIoU, all-forest, colour table (0.50, 0.50, 0.51), gain
    assert cells == [["linear", "3", "0.6200 ± 0.0497", "0.3000 ± 0.0000", "0.5033 ± 0.0143",
                      "+0.1167 [+0.0787, +0.1546]"]]
    assert "network final val mIoU" in section and "gain over colour [95% CI]" in section
    assert result.baselines is not None and len(result.baselines) == 2
    assert "**Warning:** 6 of 6 trial(s) use split=random: their validation tiles share " \
           "scenes with their training tiles" in report
    assert "## Heads (paired by seed" in report and "head" in result.factor_differences
    heads = result.factor_differences["head"].iloc[0]
    # linear - unet per seed: -0.10, -0.11, -0.10 -> mean -0.1033333
    assert heads["mean_diff"] == pytest.approx(-0.1033333, abs=1e-6)
    assert heads["verdict"] == "head=unet better"  # one comparison: p_holm = p
    assert heads["p_holm"] == pytest.approx(heads["p_value"])
    assert "## Encoder stages" not in report  # encoder_stages does not vary


def test_report_counts_trials_missing_from_results(tmp_path):
    from forest_seg.analysis import analyze

    rows = points_study().to_dict("records")
    history = pd.DataFrame(history_rows(rows) + [{"trial_id": "running", "epoch": 1}])
    result = analyze(pd.DataFrame(rows), history, tmp_path)
    assert result.notes[0].startswith("1 trial(s) have epochs in the history but no results row")
