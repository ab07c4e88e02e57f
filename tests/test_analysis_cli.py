"""sweeps/analyze.py end to end on hand-made experiment directories."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "sweeps" / "analyze.py"


@pytest.fixture(scope="module")
def analyze_cli():
    spec = importlib.util.spec_from_file_location("analyze_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_grid(path: Path, stop_low_lr: bool = False) -> Path:
    """points {0, 10, 50} x lr {1e-3, 1e-4} x seeds {0, 1}; 3 planned epochs."""
    rows, history = [], []
    for p, base in ((0, 0.80), (10, 0.60), (50, 0.70)):
        for lr, shift in ((1e-3, -0.10), (1e-4, 0.0)):
            for seed in (0, 1):
                best = base + shift + 0.01 * seed
                stopped = stop_low_lr and lr == 1e-3
                epochs = 1 if stopped else 3
                tid = f"t{len(rows):02d}"
                rows.append({
                    "trial_id": tid, "points": p, "lr": lr, "seed": seed,
                    "point_strategy": "balanced", "alpha": None, "max_epochs": 3,
                    "status": "EARLY_STOPPED" if stopped else "COMPLETED",
                    "val_iou": best + 0.05, "val_miou": best - 0.01, "val_loss": 0.4,
                    "best_val_iou": best + 0.06, "best_val_miou": best, "epochs": epochs,
                    "train_time_s": 5.0 * epochs})
                for e in range(1, epochs + 1):
                    history.append({"trial_id": tid, "epoch": e, "train_loss": 1 / e,
                                    "val_loss": 1 / e, "val_iou": best - 0.1 / e,
                                    "val_miou": best - 0.1 / e, "lr": lr, "diverged": False})
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
    pd.DataFrame(history).to_csv(path / "history.csv", index=False)
    return path


def test_end_to_end_writes_report_and_pngs(analyze_cli, tmp_path, capsys):
    exp = make_grid(tmp_path / "grid")
    fifo = make_grid(tmp_path / "fifo")
    asha = make_grid(tmp_path / "asha", stop_low_lr=True)
    out = tmp_path / "report"
    assert analyze_cli.main([str(exp), "--out", str(out),
                             "--compare", str(asha), str(fifo)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"analyze: exp_dirs={exp} out={out} metric=val_miou")
    report = (out / "report.md").read_text()
    for name in ("miou_vs_points", "miou_vs_lr", "learning_curves"):
        assert f"![{name}]({name}.png)" in report
        assert (out / f"{name}.png").stat().st_size > 1000
    assert "`asha_stops.png` skipped" in report  # every trial of `grid` completed
    assert "## Early stopping: ASHA vs FIFO" in report
    # FIFO 12 x 3 = 36 trial-epochs; ASHA 6 x 3 + 6 x 1 = 24 -> saved 1/3; same best config
    assert "| saved by ASHA" in report and "33.3%" in report
    assert "| same best" in report
    assert "## Paired differences" in report and "points=50 better" in report
    assert "## What this shows / does not show" in report
    assert "## Per configuration" in printed and "## Learning-rate instability" in printed


def test_default_out_and_metric(analyze_cli, tmp_path, capsys):
    exp = make_grid(tmp_path / "grid", stop_low_lr=True)
    assert analyze_cli.main([str(exp), "--metric", "best_val_miou"]) == 0
    assert (exp / "analysis" / "report.md").is_file()
    assert (exp / "analysis" / "asha_stops.png").is_file()
    report = (exp / "analysis" / "report.md").read_text()
    assert "metric: `best_val_miou` (best epoch val mIoU (optimistic: picked on validation))" \
        in report
    assert "metric=best_val_miou" in capsys.readouterr().out
    assert analyze_cli.build_parser().parse_args([str(exp)]).metric == "val_miou"
    # lr 1e-3 trials stopped after epoch 1: every configuration is also shown at epoch 1
    assert "final val mIoU at epoch 1, every seed (95% CI)" in report
    assert "Early-stopped trials: every configuration is also shown at epoch 1" in report


def test_quickstart_configuration_table_says_seeds_and_epochs(tmp_path):
    from forest_seg.sweep.tables import configuration_table

    exp = make_grid(tmp_path / "grid", stop_low_lr=True)
    lines = configuration_table(str(exp)).splitlines()
    assert len(lines) == 6
    # best first: points=0 at lr 1e-4, final val mIoU 0.79, 0.80 -> 0.795, sd 0.0070711,
    # half-width 12.7062047 * 0.0070711 / sqrt(2) = 0.0635310; at epoch 1 (best - 0.1):
    # 0.70, 0.71 -> 0.705
    assert lines[0].split()[:2] == ["points=0,", "lr=0.0001"]
    assert "final val mIoU 0.795 [0.731, 0.859] (2 seeds at epoch 3)" in lines[0]
    assert "left out: 0 early-stopped, 0 diverged, 0 error" in lines[0]
    assert "every seed: 0.705 [0.641, 0.769] (2 seeds at epoch 1)" in lines[0]
    # lr 1e-3 stopped after one epoch: no headline seed, never an average over 1 and 3 epochs;
    # points=50 at epoch 1: 0.50, 0.51
    stopped = next(ln for ln in lines if "points=50, lr=0.001 " in ln)
    assert "final val mIoU no seed; left out: 2 early-stopped" in stopped
    assert "every seed: 0.505 [0.441, 0.569] (2 seeds at epoch 1)" in stopped
    assert all("lr=0.001 " in ln for ln in lines[3:])  # NaN means last


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated"])
def test_bad_dir_exits_2_with_one_line(analyze_cli, tmp_path, capsys, kind):
    bad = tmp_path / "nope"
    if kind == "empty":
        bad.mkdir()
    if kind == "truncated":  # results.csv cut mid-number: a short last row
        make_grid(bad)
        text = (bad / "results.csv").read_text()
        (bad / "results.csv").write_text(text[:text.rindex(",0.", 0, len(text) - 30) + 3])
    assert analyze_cli.main([str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(bad) in err
    if kind == "truncated":
        assert "results.csv line 13: " in err  # the header and 12 trials: the last row
    assert "Traceback" not in err


def test_runs_as_a_script(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: experiment "
                                                "directory not found"]


def test_where_keeps_only_matching_trials(analyze_cli):
    import tempfile

    from forest_seg.analysis import ResultsError, load_experiments

    with tempfile.TemporaryDirectory() as folder:
        trials, epochs = load_experiments([make_grid(Path(folder) / "grid")])
        kept, kept_epochs = analyze_cli.select(trials, epochs, ["points=50", "lr=1e-3"])
        # points=50 at lr 1e-3: seeds 0 and 1, 3 epochs each
        assert sorted(kept["seed"]) == [0, 1] and set(kept["points"]) == {50}
        assert len(kept_epochs) == 6 and set(kept_epochs["trial_id"]) == set(kept["trial_id"])
        with pytest.raises(ResultsError, match="no trial matches"):
            analyze_cli.select(trials, epochs, ["points=7"])
        with pytest.raises(ResultsError, match="COLUMN=VALUE"):
            analyze_cli.select(trials, epochs, ["colour=green"])


def test_pooled_copies_are_reported_and_counted_once(analyze_cli, tmp_path):
    one = make_grid(tmp_path / "a" / "grid")
    copy = make_grid(tmp_path / "b" / "grid")
    assert analyze_cli.main([str(one), str(copy), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "12 duplicate trial(s) (same config and seed as another" in report
    assert "Experiments: grid; 12 trials" in report


def test_labelling_cost_section_prices_each_labelling(analyze_cli, tmp_path, capsys):
    exp = make_grid(tmp_path / "grid")
    results = pd.read_csv(exp / "results.csv").assign(train_tiles=360)
    results.to_csv(exp / "results.csv", index=False)
    out = tmp_path / "report"
    assert analyze_cli.main([str(exp), "--out", str(out), "--where", "lr=0.0001",
                             "--seconds-per-point", "1", "--seconds-per-mask", "100"]) == 0
    report = (out / "report.md").read_text()
    assert "## Labelling cost" in report
    assert "1 s per point click, 100 s per dense mask" in report
    # 360 tiles: 10 points = 1 h, 50 points = 5 h, dense = 10 h
    rows = {line.split("|")[1].strip(): line for line in report.splitlines()
            if line.startswith("| ") and "points" in line or line.startswith("| dense")}
    assert "1.00" in rows["10 points"] and "5.00" in rows["50 points"]
    assert "10.00" in rows["dense"]
    # two seeds, dense 0.79/0.80 far above 50 points 0.69/0.70: best dense, nothing cheaper
    # within 0.02 (paired differences are exactly 0.10, so the tests are decisive)
    assert "**Verdict:** cheapest labelling within 0.02 val_miou of the best (dense" in report
    assert "- 10 points differs from dense: resolved at 2 paired seeds" in report
    assert (out / "miou_vs_label_cost.png").stat().st_size > 0


def test_a_bad_cost_is_one_line_and_exit_2(analyze_cli, tmp_path, capsys):
    exp = make_grid(tmp_path / "grid")
    assert analyze_cli.main([str(exp), "--seconds-per-mask", "-5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: invalid --seconds-per-mask -5.0: expected a positive number of "
                   "seconds"]
