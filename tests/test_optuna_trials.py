"""OptunaTrials: Ray's OptunaSearch telling Optuna PRUNED for trials stopped early, FAIL for
diverged or failed ones, with user attributes; the study's default storage in the experiment."""

import optuna
from optuna.trial import TrialState
from ray import tune

from forest_seg.sweep.optuna_storage import STUDY_FILE, load_study, study_storage
from forest_seg.sweep.optuna_trials import OptunaTrials


def searcher(tmp_path, name="exp"):
    experiment = tmp_path / name
    storage = optuna.storages.RDBStorage(study_storage(str(experiment), None))
    return OptunaTrials(space={"lr": tune.loguniform(1e-5, 1e-2)}, metric="val_miou",
                        mode="max", sampler=optuna.samplers.TPESampler(seed=0),
                        storage=storage, study_name=name, experiment_path=str(experiment))


def run_trial(search, trial_id, mious, planned=3, error=False, diverged=False, checkpoint=None):
    """Suggest, report ``mious`` epoch by epoch, then finish as Ray Tune does."""
    search.suggest(trial_id)
    last = {}
    for epoch, miou in enumerate(mious, start=1):
        last = {"val_miou": miou, "epoch": epoch, "training_iteration": epoch,
                "config/epochs": planned, "diverged": diverged and epoch == len(mious),
                "checkpoint_dir_name": checkpoint}
        search.on_trial_result(trial_id, last)
    search.on_trial_complete(trial_id, last or None, error=error)


def test_stopped_trials_are_pruned_with_their_intermediate_values(tmp_path):
    search = searcher(tmp_path)
    trial_dir = tmp_path / "exp" / "trainable_aaa1_1_lr=0.001" / "checkpoint_000000"
    trial_dir.mkdir(parents=True)
    run_trial(search, "aaa1", [0.30], checkpoint="checkpoint_000000")  # ASHA stopped it
    run_trial(search, "bbb2", [0.31, 0.40, 0.45])  # ran its 3 epochs
    run_trial(search, "ccc3", [0.20, float("nan")], diverged=True)
    run_trial(search, "ddd4", [0.25], error=True)
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
