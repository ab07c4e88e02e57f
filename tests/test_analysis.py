"""forest_seg.analysis on small hand-made result tables with hand-computed answers."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest

from forest_seg.analysis import (
    T_975,
    ResultsError,
    compare_early_stopping,
    config_columns,
    load_experiment,
    load_experiments,
    lr_instability,
    make_plots,
    mean_ci,
    paired_differences,
    summarize,
    t_quantile,
    to_markdown,
)
from forest_seg.errors import ForestSegError

RESULT_COLS = ["status", "val_iou", "val_miou", "val_loss", "best_val_iou", "best_val_miou",
               "epochs", "train_time_s"]


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


# --------------------------------------------------------------------------- t table, mean_ci
def t_cdf_central(q: float, df: int) -> float:
    """P(|T| <= q) by integrating the t density with the trapezoid rule (independent check)."""
    x = np.linspace(-q, q, 200_001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    pdf = np.exp(log_c) * (1 + x**2 / df) ** (-(df + 1) / 2)
    return float(np.sum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x)))


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 30, 120])
def test_t_table_matches_the_t_distribution(df):
    assert t_cdf_central(T_975[df], df) == pytest.approx(0.95, abs=2e-4)


def test_t_quantile_takes_next_smaller_df_conservatively():
    assert t_quantile(2) == 4.3027
    assert t_quantile(35) == T_975[30]  # between 30 and 40: the larger quantile of df=30
    assert t_quantile(1000) == T_975[120]
    assert math.isnan(t_quantile(0))


def test_mean_ci_by_hand():
    # 0.60, 0.62, 0.64: mean 0.62; sd = sqrt((0.02^2 + 0 + 0.02^2) / 2) = 0.02;
    # half-width = 4.3027 * 0.02 / sqrt(3) = 0.0496835
    s = mean_ci([0.60, 0.62, 0.64])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.62) and s["sd"] == pytest.approx(0.02)
    assert s["ci_lo"] == pytest.approx(0.62 - 0.0496835, abs=1e-6)
    assert s["ci_hi"] == pytest.approx(0.62 + 0.0496835, abs=1e-6)
    one = mean_ci([0.5, float("nan")])  # NaN (an ERROR trial) is left out -> a single value
    assert one["n"] == 1 and one["mean"] == 0.5
    assert math.isnan(one["sd"]) and math.isnan(one["ci_lo"]) and math.isnan(one["ci_hi"])


# --------------------------------------------------------------------------- summaries
def test_summarize_means_intervals_and_single_seed_flag():
    summary = summarize(points_study()).set_index("points")
    assert list(summary.index) == [0, 50, 100, 200]
    assert summary.loc[50, "n_seeds"] == 3
    assert summary.loc[50, "best_val_miou_mean"] == pytest.approx(0.62)
    assert summary.loc[50, "best_val_miou_sd"] == pytest.approx(0.02)
    assert summary.loc[50, "best_val_miou_ci_hi"] == pytest.approx(0.6696835, abs=1e-6)
    assert summary.loc[50, "val_miou_mean"] == pytest.approx(0.61)  # final = best - 0.01
    assert summary.loc[50, "best_val_iou_mean"] == pytest.approx(0.72)
    # 100: 0.70, 0.71, 0.75 -> mean 0.72
    assert summary.loc[100, "best_val_miou_mean"] == pytest.approx(0.72)
    assert summary.loc[0, "n_seeds"] == 1 and bool(summary.loc[0, "inconclusive"])
    assert math.isnan(summary.loc[0, "best_val_miou_sd"])
    assert not summary.loc[[50, 100, 200], "inconclusive"].any()
    assert summary.loc[50, "config"] == "points=50"  # only varying columns label a config


def test_missing_config_values_group_together():
    rows = [trial(1, seed=0, alpha=None, best=0.5), trial(2, seed=1, alpha=None, best=0.7),
            trial(3, seed=0, alpha=0.25, best=0.9)]
    summary = summarize(pd.DataFrame(rows))
    assert list(summary["config"]) == ["alpha=0.25", "alpha=None"]
    assert list(summary["n_seeds"]) == [1, 2]
    assert summary["best_val_miou_mean"].iloc[1] == pytest.approx(0.6)


def test_config_columns_are_generic():
    frame = pd.DataFrame([trial(1, head="fpn", train_loss=0.3, best_val_dice=0.4)])
    assert config_columns(frame) == ["points", "lr", "point_strategy", "alpha", "max_epochs",
                                     "head"]
    assert "seed" in config_columns(frame, include_seed=True)


# --------------------------------------------------------------------------- paired differences
def test_paired_differences_by_seed():
    diffs = paired_differences(points_study())
    got = {(r.a, r.b): r for r in diffs.itertuples()}
    assert set(got) == {(100, 50), (200, 100), (0, 50), (0, 100), (0, 200)}
    # 100 - 50 per seed: 0.10, 0.09, 0.11 -> mean 0.10, sd 0.01,
    # half-width 4.3027 * 0.01 / sqrt(3) = 0.0248417 -> [0.0751583, 0.1248417]: a clear gain
    clear = got[(100, 50)]
    assert clear.n_pairs == 3 and clear.mean_diff == pytest.approx(0.10)
    assert clear.sd_diff == pytest.approx(0.01)
    assert clear.ci_lo == pytest.approx(0.0751583, abs=1e-6)
    assert clear.ci_hi == pytest.approx(0.1248417, abs=1e-6)
    assert clear.verdict == "points=100 better"
    # 200 - 100 per seed: +0.01, -0.02, +0.01 -> mean 0, sd sqrt(0.0003) = 0.0173205,
    # half-width 4.3027 * 0.0173205 / sqrt(3) = 0.043027: the interval holds 0
    noise = got[(200, 100)]
    assert noise.mean_diff == pytest.approx(0.0, abs=1e-12)
    assert noise.ci_hi == pytest.approx(0.043027, abs=1e-6)
    assert noise.verdict == "within noise"
    # dense has one seed: one pair, 0.80 - 0.60
    dense = got[(0, 50)]
    assert dense.n_pairs == 1 and dense.mean_diff == pytest.approx(0.20)
    assert dense.verdict == "inconclusive (1 seed)"


def test_paired_differences_worse_and_grouped_and_unpaired_seeds():
    rows = [trial(f"{lr}-{p}-{s}", points=p, lr=lr, seed=s, best=b)
            for lr, shift in ((1e-4, 0.0), (1e-3, -0.2))
            for p, base in ((10, 0.7), (50, 0.5))
            for s, b in enumerate([base + shift, base + shift + 0.01])]
    rows.append(trial("extra", points=10, lr=1e-4, seed=7, best=0.99))  # no partner at 50
    diffs = paired_differences(pd.DataFrame(rows))
    assert list(diffs["group"]) == ["lr=0.0001", "lr=0.001"]
    assert list(diffs["lr"]) == [1e-4, 1e-3]
    # 50 - 10 = -0.2 for both seeds (sd 0 -> interval is the point -0.2): the smaller count wins
    assert list(diffs["n_pairs"]) == [2, 2]
    assert diffs["mean_diff"].tolist() == pytest.approx([-0.2, -0.2])
    assert set(diffs["verdict"]) == {"points=10 better"}
    assert paired_differences(pd.DataFrame(rows), pairs="all").shape[0] == 2


# --------------------------------------------------------------------------- lr instability
def test_lr_instability_by_hand():
    rows = [trial("a", lr=1e-3, seed=0, best=0.55, final=0.5, epochs=3),
            trial("b", lr=1e-3, seed=1, best=0.3, final=0.3, status="EARLY_STOPPED", epochs=2),
            trial("c", lr=1e-3, seed=2, best=0.2, final=float("nan"), status="DIVERGED",
                  epochs=2),
            trial("d", lr=1e-4, seed=0, best=0.62, final=0.6, epochs=3),
            trial("e", lr=1e-4, seed=1, best=0.64, final=0.64, epochs=3)]
    losses = {"a": [1.0, 0.5, 1.5], "b": [1.0, 0.8], "c": [1.0, float("inf")],
              "d": [1.0, 0.9, 0.8], "e": [1.0, 0.9, 0.85]}
    history = pd.DataFrame([{"trial_id": t, "epoch": i + 1, "val_loss": v, "val_miou": 0.5}
                            for t, vs in losses.items() for i, v in enumerate(vs)])
    table = lr_instability(pd.DataFrame(rows), history).set_index("lr")
    assert list(table.index) == [1e-4, 1e-3]
    hi = table.loc[1e-3]
    assert hi["n_trials"] == 3
    assert hi["divergence_rate"] == pytest.approx(1 / 3)
    assert hi["early_stop_rate"] == pytest.approx(1 / 3)
    # a: |0.5-1.0|, |1.5-0.5| -> 0.75; b: 0.2; c: only one finite loss -> left out
    assert hi["volatility"] == pytest.approx((0.75 + 0.2) / 2)
    assert hi["seed_sd"] == pytest.approx(np.std([0.5, 0.3], ddof=1))  # c has no final mIoU
    assert hi["best_last_gap"] == pytest.approx((0.05 + 0.0) / 2)
    lo = table.loc[1e-4]
    assert lo["divergence_rate"] == 0 and lo["early_stop_rate"] == 0
    assert lo["volatility"] == pytest.approx((0.1 + 0.075) / 2)  # d: 0.1; e: (0.1 + 0.05) / 2
    assert lo["seed_sd"] == pytest.approx(np.std([0.6, 0.64], ddof=1))
    assert lo["best_last_gap"] == pytest.approx(0.01)


# --------------------------------------------------------------------------- ASHA vs FIFO
def asha_fifo(asha_low: bool):
    """FIFO: 4 trials x 4 epochs = 16; ASHA: 4 + 4 + 1 + 1 = 10 trial-epochs."""
    fifo = [trial(f"f{i}", lr=lr, seed=s, best=b, epochs=4)
            for i, (lr, s, b) in enumerate([(1e-3, 0, 0.60), (1e-3, 1, 0.62),
                                            (1e-4, 0, 0.64), (1e-4, 1, 0.66)])]
    stopped = (0.40, 0.42) if asha_low else (0.64, 0.66)
    asha = [trial("a0", lr=1e-3, seed=0, best=0.60, epochs=4),
            trial("a1", lr=1e-3, seed=1, best=0.62, epochs=4),
            trial("a2", lr=1e-4, seed=0, best=stopped[0], epochs=1, status="EARLY_STOPPED"),
            trial("a3", lr=1e-4, seed=1, best=stopped[1], epochs=1, status="EARLY_STOPPED")]
    return pd.DataFrame(asha), pd.DataFrame(fifo)


def test_asha_savings_and_regret():
    asha, fifo = asha_fifo(asha_low=True)
    r = compare_early_stopping(asha, fifo)
    assert (r["asha_trial_epochs"], r["fifo_trial_epochs"]) == (10, 16)
    assert r["ratio"] == pytest.approx(0.625) and r["saved_fraction"] == pytest.approx(0.375)
    # ASHA picks lr 1e-3 (mean 0.61 > 0.41); FIFO picks lr 1e-4 (0.65 > 0.61)
    assert r["asha_best"] == {"lr": 1e-3} and r["fifo_best"] == {"lr": 1e-4}
    assert not r["same_best"]
    assert r["regret"] == pytest.approx(0.65 - 0.61)


def test_asha_same_best_has_no_regret():
    asha, fifo = asha_fifo(asha_low=False)
    r = compare_early_stopping(asha, fifo)
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
    write_exp(tmp_path / "a" / "grid", rows, history_rows(rows))
    write_exp(tmp_path / "b" / "grid", rows[:2], history_rows(rows[:2]))
    trials, epochs = load_experiments([tmp_path / "a" / "grid", tmp_path / "b" / "grid"])
    assert list(trials["experiment"].unique()) == ["grid", "grid#2"]
    assert not trials.duplicated(["experiment", "trial_id"]).any()
    assert len(trials) == 12 and set(epochs["experiment"]) == {"grid", "grid#2"}
    with pytest.raises(ResultsError, match="given twice"):
        load_experiments([tmp_path / "a" / "grid", tmp_path / "a" / "grid"])


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
    for r in rows:  # final metrics = last epoch's, as the drivers write them
        last = [h for h in history if h["trial_id"] == r["trial_id"]][-1]
        r.update(val_iou=last["val_iou"], val_miou=last["val_miou"],
                 val_loss=last["val_loss"], train_time_s=10.0 * r["epochs"])
    errored = trial("abc12_00003", seed=3, epochs=0, max_epochs=3, status="ERROR")
    errored.update({k: float("nan") for k in RESULT_COLS[1:] if k != "epochs"})
    errored["train_time_s"] = 0.0  # no epoch reported: the sum of no epoch times
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


def test_missing_dir_and_missing_results_are_clear_errors(tmp_path):
    with pytest.raises(ResultsError, match="not found"):
        load_experiment(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ForestSegError, match=r"empty: no results\.csv"):
        load_experiment(tmp_path / "empty")
    pd.DataFrame({"trial_id": ["1"], "points": [50]}).to_csv(tmp_path / "results.csv")
    with pytest.raises(ResultsError, match="missing column"):
        load_experiment(tmp_path)


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


def test_report_explains_inconclusive_and_within_noise(tmp_path):
    from forest_seg.analysis import analyze

    result = analyze(points_study(), None, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert report == result.markdown
    notes = "\n".join(result.notes)
    assert "1 configuration(s) have a single seed (points=0)" in notes
    assert "points=200 vs points=100: difference " in notes  # mean 0, CI holds 0
    assert "does not show that either is better" in notes
    assert "points=100 vs points=50: points=100 better" in notes
    assert "| 0.6200 ± 0.0497" in report  # points=50: 0.62 +- 4.3027 * 0.02 / sqrt(3)
    assert "inconclusive (1 seed)" in report
    assert "`learning_curves.png` skipped: no per-epoch history" in report
    assert "`asha_stops.png` skipped" in report


def test_report_counts_trials_missing_from_results(tmp_path):
    from forest_seg.analysis import analyze

    rows = points_study().to_dict("records")
    history = pd.DataFrame(history_rows(rows) + [{"trial_id": "running", "epoch": 1}])
    result = analyze(pd.DataFrame(rows), history, tmp_path)
    assert result.notes[0].startswith("1 trial(s) have epochs in the history but no results row")
