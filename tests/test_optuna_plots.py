"""An Optuna experiment analysed with Optuna's own plots (words on the axes, log lr axis, PNG
and SVG), found through results.csv's driver column and the experiment's optuna.db; and the
study seen by optuna-dashboard on 127.0.0.1."""

import importlib.util
import json
import threading
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from forest_seg.analysis.optuna_plots import OPTUNA_PLOTS, _draw, experiment_study, optuna_plots
from forest_seg.sweep.optuna_storage import STUDY_FILE

SCRIPT = Path(__file__).resolve().parents[1] / "sweeps" / "analyze.py"
SPACE = {"points": IntDistribution(5, 400, log=True), "lr": FloatDistribution(1e-6, 1e-2, log=True)}
# (points, lr, per-epoch val mIoU, state): two pruned after one epoch of three
TRIALS = [(10, 1e-3, [0.40, 0.50, 0.55], TrialState.COMPLETE),
          (200, 1e-5, [0.30], TrialState.PRUNED),
          (50, 3e-4, [0.45, 0.52, 0.60], TrialState.COMPLETE),
          (5, 2e-6, [0.20], TrialState.PRUNED),
          (100, 5e-3, [0.42, 0.50, 0.51], TrialState.COMPLETE)]


def optuna_experiment(path: Path) -> Path:
    """An experiment folder as sweeps/optuna_search.py leaves it: optuna.db holding the study
    named like the folder, results.csv (driver optuna) and history.csv."""
    path.mkdir(parents=True)
    study = optuna.create_study(study_name=path.name, direction="maximize",
                                storage=f"sqlite:///{path / STUDY_FILE}")
    rows, history = [], []
    for i, (points, lr, mious, state) in enumerate(TRIALS):
        tid = f"t{i}"
        study.add_trial(create_trial(
            params={"points": points, "lr": lr}, distributions=SPACE, state=state,
            value=mious[-1], intermediate_values=dict(enumerate(mious, start=1)),
            user_attrs={"ray_trial_id": tid}))
        rows.append({"trial_id": tid, "driver": "optuna", "points": points, "lr": lr, "seed": 0,
                     "max_epochs": 3, "epochs": len(mious), "val_miou": mious[-1],
                     "best_val_miou": max(mious), "val_loss": 0.5,
                     "status": "COMPLETED" if state == TrialState.COMPLETE else "EARLY_STOPPED"})
        history += [{"trial_id": tid, "epoch": e, "val_miou": m, "val_loss": 0.5, "lr": lr}
                    for e, m in enumerate(mious, start=1)]
    pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
    pd.DataFrame(history).to_csv(path / "history.csv", index=False)
    return path


def test_analyze_draws_optunas_plots_for_an_optuna_experiment(tmp_path):
    spec = importlib.util.spec_from_file_location("analyze_cli", SCRIPT)
    analyze_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(analyze_cli)
    exp = optuna_experiment(tmp_path / "tpe")
    out = tmp_path / "report"
    assert analyze_cli.main([str(exp), "--out", str(out)]) == 0
    for name in OPTUNA_PLOTS:
        assert (out / f"optuna_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"optuna_{name}.svg").read_text().lstrip().startswith("<?xml")
    assert not list(out.glob("miou_vs_*"))  # no grid plots
    report = (out / "report.md").read_text()
    assert "![optuna_slice](optuna_slice.png)" in report
    history = (out / "optuna_optimization_history.svg").read_text()
    assert "Validation mIoU" in history and "Objective Value" not in history
    importances = (out / "optuna_param_importances.svg").read_text()
    assert "Learning rate" in importances and "Points per image" in importances


def test_slice_plot_has_word_labels_and_log_axes(tmp_path):
    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///"
                              f"{optuna_experiment(tmp_path / 'tpe') / STUDY_FILE}")
    fig = _draw("slice", study, "val_miou")
    fig.canvas.draw()
    axes = {ax.get_xlabel(): ax for ax in fig.axes if ax.get_xlabel()}
    assert sorted(axes) == ["Learning rate", "Points per image"]
    assert {ax.get_xscale() for ax in axes.values()} == {"log"}
    assert fig.axes[0].get_ylabel() == "Validation mIoU"
    ticks = {name: {t.get_text() for t in ax.get_xticklabels()} for name, ax in axes.items()}
    assert {"5e-04", "1e-03", "2e-03"} <= ticks["Learning rate"]  # scientific, no 10^x maths
    assert {"10", "20", "50"} <= ticks["Points per image"]


def test_grid_plots_when_not_one_optuna_experiment_with_its_study(tmp_path):
    exp = optuna_experiment(tmp_path / "tpe")
    trials = pd.read_csv(exp / "results.csv")
    assert experiment_study([exp], trials).study_name == "tpe"
    assert experiment_study([exp], trials.assign(driver="grid")) is None
    assert experiment_study([exp, exp], trials) is None
    (exp / STUDY_FILE).unlink()
    assert experiment_study([exp], trials) is None  # no study: the grid plots are drawn


def test_the_storage_named_in_sweep_json_is_used(tmp_path):
    exp = optuna_experiment(tmp_path / "tpe")
    moved = tmp_path / "elsewhere.db"
    (exp / STUDY_FILE).rename(moved)
    (exp / "sweep.json").write_text(json.dumps({"study_storage": f"sqlite:///{moved}"}))
    assert len(experiment_study([exp], pd.read_csv(exp / "results.csv")).trials) == len(TRIALS)


def test_no_complete_trial_skips_every_plot_with_the_reason(tmp_path):
    study = optuna.create_study()
    plots = optuna_plots(study, tmp_path)
    assert [p.path for p in plots] == [None] * len(OPTUNA_PLOTS)
    assert all("no COMPLETE trial" in p.note for p in plots)
    assert not list(tmp_path.iterdir())


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # no request lines on stderr
        pass


def test_optuna_dashboard_shows_the_study(tmp_path):
    dashboard = pytest.importorskip("optuna_dashboard", reason="optional extra [optuna]: "
                                    "pip install optuna-dashboard")
    exp = optuna_experiment(tmp_path / "tpe")
    app = dashboard.wsgi(optuna.storages.RDBStorage(f"sqlite:///{exp / STUDY_FILE}"))
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/api/studies"
        studies = _get(base)["study_summaries"]
        detail = _get(f"{base}/{studies[0]['study_id']}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert [s["study_name"] for s in studies] == ["tpe"]
    assert [t["state"] for t in detail["trials"]] == [
        "Complete", "Pruned", "Complete", "Pruned", "Complete"]
    assert detail["best_trials"][0]["values"] == [0.60]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())
