"""OptunaTrials: Ray's OptunaSearch telling Optuna PRUNED for trials stopped early, FAIL for
diverged or failed ones, with user attributes; the study's default storage in the experiment."""

import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from ray import tune
from test_sweeps import ROOT, run_driver

from forest_seg.analysis.optuna_plots import OPTUNA_PLOTS
from forest_seg.sweep.optuna_storage import STUDY_FILE, load_study, study_storage
from forest_seg.sweep.optuna_trials import OPTUNA_STATES as STATES
from forest_seg.sweep.optuna_trials import OptunaTrials


def searcher(tmp_path, name="exp"):
    experiment = tmp_path / name
    storage = optuna.storages.RDBStorage(study_storage(str(experiment), None))
    return OptunaTrials(space={"lr": tune.loguniform(1e-5, 1e-2)}, metric="val_miou",
                        mode="max", sampler=optuna.samplers.TPESampler(seed=0),
                        storage=storage, study_name=name, experiment_path=str(experiment))


def run_trial(search, trial_id, mious, planned=3, error=False, diverged=False, checkpoint=None,
              stopped=True):
    """Suggest, report ``mious`` epoch by epoch, then finish as Ray Tune does: when a
    scheduler ``stopped`` the trial (ASHA's STOP, also at its last epoch), the last result goes
    to on_trial_complete only; a trial that ended by itself reports it first."""
    search.suggest(trial_id)
    last = {}
    for epoch, miou in enumerate(mious, start=1):
        last = {"val_miou": miou, "epoch": epoch, "training_iteration": epoch,
                "config/epochs": planned, "diverged": diverged and epoch == len(mious),
                "checkpoint_dir_name": checkpoint}
        if not (stopped and epoch == len(mious)):
            search.on_trial_result(trial_id, last)
    search.on_trial_complete(trial_id, last or None, error=error)


def test_stopped_trials_are_pruned_with_their_intermediate_values(tmp_path):
    search = searcher(tmp_path)
    trial_dir = tmp_path / "exp" / "trainable_aaa1_1_lr=0.001" / "checkpoint_000000"
    trial_dir.mkdir(parents=True)
    run_trial(search, "aaa1", [0.30], checkpoint="checkpoint_000000")  # ASHA stopped it
    run_trial(search, "bbb2", [0.31, 0.40, 0.45], stopped=False)  # ran its 3 epochs (FIFO)
    run_trial(search, "ccc3", [0.20, float("nan")], diverged=True)
    run_trial(search, "ddd4", [], error=True)
    study = load_study(tmp_path / "exp")  # the experiment's optuna.db, named like its folder
    assert (tmp_path / "exp" / STUDY_FILE).is_file()
    trials = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    pruned, done, diverged, failed = (trials[t] for t in ("aaa1", "bbb2", "ccc3", "ddd4"))
    assert pruned.state == TrialState.PRUNED and pruned.value == 0.30
    assert pruned.intermediate_values == {1: 0.30}
    assert pruned.user_attrs == {"ray_trial_id": "aaa1", "status": "EARLY_STOPPED",
                                 "epochs": 1, "checkpoint": str(trial_dir)}
    assert done.state == TrialState.COMPLETE and done.value == 0.45
    assert done.intermediate_values == {1: 0.31, 2: 0.40, 3: 0.45}
    assert done.user_attrs == {"ray_trial_id": "bbb2", "status": "COMPLETED", "epochs": 3}
    assert diverged.state == TrialState.FAIL and diverged.user_attrs["status"] == "DIVERGED"
    assert failed.state == TrialState.FAIL and failed.user_attrs["status"] == "ERROR"
    assert failed.intermediate_values == {}  # an errored trial's result never arrives
    assert study.best_trial.user_attrs["ray_trial_id"] == "bbb2"


def test_the_searcher_survives_rays_save_and_restore(tmp_path):
    search = searcher(tmp_path)
    run_trial(search, "aaa1", [0.30])
    search.save(str(tmp_path / "searcher.pkl"))
    restored = OptunaTrials()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert isinstance(restored, OptunaTrials)
    assert restored.experiment_path == str(tmp_path / "exp")
    run_trial(restored, "bbb2", [0.31, 0.40, 0.45])
    states = [t.state for t in load_study(tmp_path / "exp").trials]
    assert states == [TrialState.PRUNED, TrialState.COMPLETE]


def test_default_storage_is_local_only(tmp_path):
    assert study_storage("s3://bucket/runs/exp", None) is None  # in memory, pickled by Ray
    assert study_storage(str(tmp_path), "sqlite:///x.db") == "sqlite:///x.db"
    assert study_storage(str(tmp_path / "e"), None) == f"sqlite:///{tmp_path / 'e' / STUDY_FILE}"
    assert load_study(tmp_path / "no-experiment") is None


@pytest.mark.slow
def test_a_tiny_optuna_sweep_prunes_stopped_trials_and_is_analysed_with_optunas_plots(tmp_path):
    done = run_driver("optuna_search.py", "--smoke-test", "--num-trials", 4, "--epochs", 3,
                      "--grace-period", 1, "--reduction-factor", 4, "--max-concurrent", 1,
                      "--storage-path", tmp_path, "--name", "tpe")
    assert done.returncode == 0, done.stderr[-3000:]
    exp = tmp_path / "tpe"
    results = pd.read_csv(exp / "results.csv", dtype={"trial_id": str}).set_index("trial_id")
    study = load_study(exp)  # the default storage: optuna.db in the experiment, named like it
    assert len(study.trials) == len(results) == 4
    for ot_trial in study.trials:
        row = results.loc[ot_trial.user_attrs["ray_trial_id"]]
        assert ot_trial.user_attrs["status"] == row["status"]
        assert ot_trial.state == STATES[row["status"]]
        assert ot_trial.user_attrs["epochs"] == row["epochs"]
        assert sorted(ot_trial.intermediate_values) == list(range(1, row["epochs"] + 1))
        assert Path(ot_trial.user_attrs["checkpoint"]).is_dir()
        if ot_trial.state == TrialState.PRUNED:  # its value: the last epoch's val mIoU
            assert row["epochs"] < 3
            assert ot_trial.value == pytest.approx(row["val_miou"])
    # ASHA (rungs at epoch 1; keeps the top quarter) stops some of 4 sequential trials
    assert {TrialState.PRUNED, TrialState.COMPLETE} <= {t.state for t in study.trials}
    analysed = subprocess.run([sys.executable, str(ROOT / "sweeps" / "analyze.py"), str(exp)],
                              capture_output=True, text=True, timeout=300)
    assert analysed.returncode == 0, analysed.stderr[-3000:]
    for name in OPTUNA_PLOTS:
        assert (exp / "analysis" / f"optuna_{name}.svg").is_file()
