"""Point strategies paired by seed, methods at an equal trial-epoch budget, lr paths: small
hand-made tables with hand-computed answers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest

from forest_seg.analysis import (
    analyze,
    budget_replay,
    compare_methods,
    drop_duplicate_trials,
    experiment_kind,
    load_experiments,
    method_labels,
    paired_differences,
    plot_lr_paths,
)

SCRIPT = Path(__file__).resolve().parents[1] / "sweeps" / "analyze.py"


def row(tid, curve, points=50, lr=1e-4, seed=0, strategy="balanced", max_epochs=4,
        schedule="constant", lrs=None, **extra) -> tuple[dict, list[dict]]:
    """A results.csv row and its history.csv rows from a val mIoU curve (one value per epoch);
    ``lrs`` is the per-epoch lr (default: ``lr`` every epoch)."""
    lrs = lrs or [lr] * len(curve)
    result = {"trial_id": tid, "points": points, "lr": lr, "seed": seed,
              "point_strategy": strategy, "lr_schedule": schedule, "warmup_epochs": 0,
              "alpha": None, "max_epochs": max_epochs, **extra,
              "status": "COMPLETED" if len(curve) == max_epochs else "EARLY_STOPPED",
              "val_iou": curve[-1] + 0.1, "val_miou": curve[-1], "val_loss": 0.5,
              "best_val_iou": max(curve) + 0.1, "best_val_miou": max(curve),
              "epochs": len(curve), "train_time_s": 1.0 * len(curve)}
    history = [{"trial_id": tid, "epoch": e, "train_loss": 1.0 / e, "val_loss": 1.0 / e,
                "val_iou": v + 0.1, "val_miou": v, "lr": lrs[e - 1], "diverged": False}
               for e, v in enumerate(curve, start=1)]
    return result, history


def frames(rows, experiment=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = pd.DataFrame([r for r, _ in rows])
    epochs = pd.DataFrame([h for _, hs in rows for h in hs])
    if experiment is not None:
        trials.insert(0, "experiment", experiment)
        epochs.insert(0, "experiment", experiment)
    return trials, epochs


# The grid: 4 trials x 3 epochs = 12 trial-epochs (ASHA stopped each at 3 of 4 planned);
# listed out of launch order on purpose (the replay sorts by trial_id).
GRID_CURVES = {
    "g_00003": (1e-4, 1, [0.70, 0.80, 0.85]),
    "g_00000": (1e-3, 0, [0.50, 0.55, 0.60]),
    "g_00001": (1e-3, 1, [0.40, 0.45, 0.52]),
    "g_00002": (1e-4, 0, [0.58, 0.63, 0.90]),
}
# PBT: 2 trials x 4 epochs = 8 trial-epochs; seed 0 for both; results' lr = the final lr.
PBT_PATHS = {
    "p_00000": ([0.30, 0.50, 0.60, 0.65], [1e-3, 1e-3, 8e-4, 8e-4]),
    "p_00001": ([0.20, 0.40, 0.70, 0.55], [1e-5, 1e-5, 1e-3, 1.2e-3]),
}


def grid_rows(schedules=("constant",) * 4):
    return [row(tid, curve, lr=lr, seed=seed, schedule=schedules[int(tid[-1])])
            for tid, (lr, seed, curve) in GRID_CURVES.items()]


def pbt_rows(points=50):
    return [row(tid, curve, lr=lrs[-1], lrs=lrs, points=points)
            for tid, (curve, lrs) in PBT_PATHS.items()]


def pooled(grid=None, pbt=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    g, p = frames(grid or grid_rows(), "grid-x"), frames(pbt or pbt_rows(), "pbt-y")
    return (pd.concat([g[0], p[0]], ignore_index=True),
            pd.concat([g[1], p[1]], ignore_index=True))


# --------------------------------------------------------------------------- point strategies
def strategy_trials() -> pd.DataFrame:
    best = {"balanced": [0.60, 0.62, 0.64], "forest": [0.50, 0.53, 0.54],
            "uniform": [0.61, 0.60, 0.65]}
    rows = [row(f"{s}-{i}", [v], strategy=s, seed=i, max_epochs=1)
            for s, values in best.items() for i, v in enumerate(values)]
    # points=10: one seed per strategy; dense points=0 rows must be left out (no strategy)
    rows += [row("b10", [0.40], points=10, max_epochs=1),
             row("f10", [0.45], points=10, strategy="forest", max_epochs=1),
             row("d-b", [0.90], points=0, max_epochs=1),
             row("d-f", [0.30], points=0, strategy="forest", max_epochs=1)]
    return frames(rows)[0]


def test_point_strategies_paired_by_seed():
    diffs = paired_differences(strategy_trials(), factor="point_strategy", pairs="all")
    assert 0 not in set(diffs["points"])  # dense rows have no strategy meaning
    got = {(r.points, r.a, r.b): r for r in diffs.itertuples()}
    assert set(got) == {(10, "balanced", "forest"), (50, "balanced", "forest"),
                        (50, "balanced", "uniform"), (50, "forest", "uniform")}
    assert got[(50, "balanced", "forest")].group == "points=50"
    # final val mIoU; balanced - forest per seed: 0.10, 0.09, 0.10 -> mean 0.0966667,
    # sd 0.0057735, half-width 4.3026527 * 0.0057735 / sqrt(3) = 0.0143422
    # -> [0.0823245, 0.1110089]; t = 0.0966667 / (0.0057735 / sqrt(3)) = 29,
    # p (2 df) = 1 - t / sqrt(t^2 + 2) = 0.0011869
    clear = got[(50, "balanced", "forest")]
    assert clear.n_pairs == 3 and clear.mean_diff == pytest.approx(0.0966667, abs=1e-6)
    assert clear.sd_diff == pytest.approx(0.0057735, abs=1e-6)
    assert clear.ci_lo == pytest.approx(0.0823245, abs=1e-6)
    assert clear.ci_hi == pytest.approx(0.1110089, abs=1e-6)
    assert clear.p_value == pytest.approx(1 - 29 / math.sqrt(29**2 + 2), rel=1e-5)
    assert clear.verdict == "point_strategy=balanced better"
    # balanced - uniform: -0.01, +0.02, -0.01 -> mean 0 (p = 1), sd sqrt(0.0003) = 0.0173205,
    # half-width 4.3026527 * 0.0173205 / sqrt(3) = 0.0430265: the interval holds 0
    noise = got[(50, "balanced", "uniform")]
    assert noise.mean_diff == pytest.approx(0.0, abs=1e-12)
    assert noise.ci_hi == pytest.approx(0.0430265, abs=1e-6)
    assert noise.verdict == "not resolved"
    # forest - uniform: -0.11, -0.07, -0.11 -> mean -0.0966667, sd 0.0230940,
    # half-width 4.3026527 * 0.023094 / sqrt(3) = 0.0573687 -> upper end -0.0392980 < 0;
    # t = 7.25, p = 1 - 7.25 / sqrt(7.25^2 + 2) = 0.0184979
    worse = got[(50, "forest", "uniform")]
    assert worse.ci_hi == pytest.approx(-0.0392980, abs=1e-6)
    assert worse.p_value == pytest.approx(1 - 7.25 / math.sqrt(7.25**2 + 2), rel=1e-5)
    # Holm over the three comparisons with a p-value: 3 * 0.0011869, then 2 * 0.0184979 =
    # 0.0369958 (still < 0.05), then max(0.0369958, 1 * 1.0) = 1
    assert clear.p_holm == pytest.approx(3 * clear.p_value)
    assert worse.p_holm == pytest.approx(2 * worse.p_value) and worse.p_holm < 0.05
    assert noise.p_holm == pytest.approx(1.0)
    assert worse.verdict == "point_strategy=uniform better"
    # points=10: one seed, 0.40 - 0.45
    single = got[(10, "balanced", "forest")]
    assert single.n_pairs == 1 and single.mean_diff == pytest.approx(-0.05)
    assert single.verdict == "inconclusive (1 seed)"


def test_report_has_strategy_section_only_when_strategies_vary(tmp_path):
    result = analyze(strategy_trials(), None, tmp_path / "a")
    assert "## Point strategies at equal point counts (paired by seed" in result.markdown
    assert "point_strategy=balanced vs point_strategy=forest (points=50): point_strategy="\
           "balanced better" in "\n".join(result.notes)
    assert "point_strategy=balanced vs point_strategy=uniform (points=50): difference" in \
        "\n".join(result.notes)
    assert "not resolved" in "\n".join(result.notes)
    assert result.strategy_differences is not None and result.methods is None
    one = strategy_trials().query("point_strategy == 'balanced' or points == 0")
    plain = analyze(one, None, tmp_path / "b")  # strategies vary only among dense rows
    assert "Point strategies" not in plain.markdown and plain.strategy_differences is None


# --------------------------------------------------------------------------- methods
def test_the_driver_column_names_the_method_whatever_the_folder_is_called():
    grid, _ = frames(grid_rows(), "my-own-name")
    pbt, _ = frames(pbt_rows(), "another")
    trials = pd.concat([grid.assign(driver="grid"), pbt.assign(driver="pbt")],
                       ignore_index=True)
    assert set(method_labels(trials)) == {"grid", "pbt"}
    same = pbt.assign(lr=1e-3)  # PBT trials (by driver) never repeat; grid trials would
    assert drop_duplicate_trials(same.assign(driver="pbt"))[1] == 0
    assert drop_duplicate_trials(same.assign(driver="grid"))[1] == len(same) - 1 > 0
    legacy = pd.concat([grid.assign(driver=None), pbt], ignore_index=True)
    assert set(method_labels(legacy)) == {"run"}  # no driver: the legacy name reading


def test_experiment_kind_from_the_name_prefix():
    """The legacy reading for results.csv files written before the driver column."""
    kinds = {n: experiment_kind(n) for n in ("grid-20240101-120000", "pbt_y", "grid#2",
                                             "optuna-1", "PBT-A", "gridlock", "mystudy")}
    assert kinds == {"grid-20240101-120000": "grid", "pbt_y": "pbt", "grid#2": "grid",
                     "optuna-1": "optuna", "PBT-A": "pbt", "gridlock": "run",
                     "mystudy": "run"}


def test_method_labels_split_a_kind_by_schedule_only_when_it_has_several():
    trials, _ = pooled(grid_rows(("constant", "cosine", "constant", "cosine")))
    assert method_labels(trials).tolist() == (
        ["grid lr_schedule=cosine", "grid lr_schedule=constant", "grid lr_schedule=cosine",
         "grid lr_schedule=constant", "pbt", "pbt"])  # g_00003, g_00000, g_00001, g_00002
    no_experiment = trials.drop(columns=["experiment", "lr_schedule"])
    assert set(method_labels(no_experiment)) == {"run"}


def test_methods_at_equal_budget_by_hand():
    trials, epochs = pooled()
    table = compare_methods(trials, epochs).set_index("method")
    assert list(table.index) == ["grid", "pbt"]
    # grid 4 x 3 = 12 trial-epochs, PBT 2 x 4 = 8 -> B = 8
    assert table["trial_epochs"].tolist() == [12, 8] and set(table["budget"]) == {8}
    grid, pbt = table.loc["grid"], table.loc["pbt"]
    # grid replay in trial_id order: g_00000 (0.50, 0.55, 0.60) = 3, g_00001 (0.40, 0.45,
    # 0.52) = 6, g_00002's first two epochs (0.58, 0.63) = 8; g_00003 never begins and
    # g_00002's 0.90 comes at trial-epoch 9 -> best within B = 0.63
    assert grid["budget_used"] == 8 and grid["budget_trials"] == 3
    assert grid["best_in_budget"] == pytest.approx(0.63)
    assert grid["best_in_budget_trial"] == "g_00002"
    # PBT spends exactly B: its best epoch is p_00001's 0.70
    assert pbt["best_in_budget"] == pytest.approx(0.70)
    assert pbt["best_in_budget_trial"] == "p_00001"
    # whole grid: every trial stopped at 3 of 4 epochs, so no configuration has a COMPLETED
    # seed and the best is taken at the common epoch 3: lr=1e-4 has val mIoU 0.90 (seed 0),
    # 0.85 (seed 1) there: mean 0.875, sd 0.0353553, half-width 12.7062047 * 0.0353553 /
    # sqrt(2) = 0.3176551
    assert grid["best_config"] == "lr=0.0001" and grid["best_n_seeds"] == 2
    assert grid["best_mean"] == pytest.approx(0.875) and grid["best_at_epoch"] == 3
    assert grid["best_ci_lo"] == pytest.approx(0.875 - 0.3176551, abs=1e-6)
    assert grid["seeds"] == "0, 1" and pbt["seeds"] == "0"
    # PBT: final lrs differ, so each trial is a configuration with one seed: no interval; its
    # trials COMPLETED 4 epochs, final val mIoU 0.65 (lr 8e-4) and 0.55 (lr 1.2e-3)
    assert pbt["best_config"] == "lr=0.0008" and pbt["best_mean"] == pytest.approx(0.65)
    assert pbt["best_n_seeds"] == 1 and math.isnan(pbt["best_ci_lo"])
    assert pbt["best_at_epoch"] == 4
    # same points, strategy, planned epochs...: lr and seeds are what the methods choose
    assert set(table["comparable"]) == {"yes"}


def test_budget_replay_without_history_counts_whole_trials():
    trials, _ = frames(grid_rows(), "grid-x")
    # no history: g_00000 (3, best 0.60 at its 3rd), g_00001 (6, 0.52), g_00002 cut at 2 of
    # its 3 epochs, so its best (known at epoch 3) is not seen -> 0.60 from g_00000
    replay = budget_replay(trials, None, 8)
    assert replay == {"used": 8, "trials": 3, "best": pytest.approx(0.60), "best_trial": "g_00000"}


def test_methods_that_differ_in_data_are_flagged():
    trials, epochs = pooled(pbt=pbt_rows(points=100))
    table = compare_methods(trials, epochs)
    assert table["comparable"].tolist() == ["not comparable: differs in points"] * 2


def test_report_methods_section_and_notes(tmp_path):
    trials, epochs = pooled(pbt=pbt_rows(points=100))
    result = analyze(trials, epochs, tmp_path)
    assert "## Methods at equal trial-epoch budget (B = 8 trial-epochs" in result.markdown
    assert "not comparable: differs in points" in result.markdown
    notes = "\n".join(result.notes)
    assert "The methods differ in `points` (grid: 50; pbt: 100)" in notes
    assert "launch order" in notes and "PBT's `lr` is each trial's final lr" in notes


# --------------------------------------------------------------------------- lr paths
def test_lr_paths_written_when_an_lr_changes_and_skipped_otherwise(tmp_path):
    trials, epochs = pooled()
    plot = plot_lr_paths(trials, epochs, tmp_path / "lr_paths.png")
    assert plot.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grid, grid_epochs = frames(grid_rows(), "grid-x")
    skipped = plot_lr_paths(grid, grid_epochs, tmp_path / "none.png")
    assert skipped.path is None and "no trial's lr changes" in skipped.note
    assert not (tmp_path / "none.png").exists()
    no_lr = plot_lr_paths(grid, grid_epochs.drop(columns="lr"), tmp_path / "none.png")
    assert no_lr.path is None and "no per-epoch lr" in no_lr.note


# --------------------------------------------------------------------------- sweeps/analyze.py
def write_dir(path: Path, rows) -> Path:
    trials, epochs = frames(rows)
    path.mkdir(parents=True)
    trials.to_csv(path / "results.csv", index=False)
    epochs.to_csv(path / "history.csv", index=False)
    return path


def test_analyze_cli_compares_a_grid_and_pbt_dir(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("analyze_cli_budget", SCRIPT)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    grid = write_dir(tmp_path / "grid-x", grid_rows())
    pbt = write_dir(tmp_path / "pbt-y", pbt_rows())
    out = tmp_path / "report"
    assert cli.main([str(grid), str(pbt), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "## Methods at equal trial-epoch budget (B = 8 trial-epochs" in printed
    section = report.split("## Methods at equal trial-epoch budget")[1].split("\n## ")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| grid") or
             ln.startswith("| pbt")]
    assert len(lines) == 2
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    # method, trials, seeds, trial-epochs, best within B, (trial), best config, its mean, comp.
    assert cells[0] == ["grid", "4", "0, 1", "12", "0.6300", "g_00002", "lr=0.0001",
                        "0.8750 ± 0.3177 (2 seeds, epoch 3)", "yes"]
    assert cells[1] == ["pbt", "2", "0", "8", "0.7000", "p_00001", "lr=0.0008",
                        "0.6500 (1 seed: inconclusive; epoch 4)", "yes"]
    assert "![lr_paths](lr_paths.png)" in report and (out / "lr_paths.png").stat().st_size
    assert "Point strategies" not in report  # one strategy: no section
    loaded, _ = load_experiments([grid, pbt])
    assert set(loaded["experiment"]) == {"grid-x", "pbt-y"}
