"""The sweep drivers: the study's trial list, smoke runs, ASHA statuses, bad requests, resume
after a killed driver, Optuna with a persistent study, and the cluster launcher config."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from forest_seg.results import STATUSES
from forest_seg.sweep.callbacks import retrained

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study_configs(sweep_driver):
    return sweep_driver("grid").study_configs


def run_driver(script, *args, timeout=600, prefix=()):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *prefix, str(ROOT / "sweeps" / script),
                           *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


# runs the driver given after it as __main__, and says on exit whether its process imported
# torch (the trials' workers import it; the driver only prepares and watches them)
TORCH_WATCH = ("-c", "import atexit, runpy, sys; atexit.register(lambda: print("
               "'driver imported torch:', 'torch' in sys.modules, file=sys.stderr)); "
               "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def test_default_study_is_the_reports_six_configurations_plus_dense(study_configs):
    trials = study_configs([10, 50, 100, 200], [1e-3, 1e-4, 1e-5], ["balanced"], seeds=3)
    distinct = {(t["points"], t["lr"]) for t in trials}
    assert distinct == {(10, 1e-4), (50, 1e-4), (100, 1e-4), (200, 1e-4), (50, 1e-3),
                        (50, 1e-5), (0, 1e-4)}
    assert len(trials) == 7 * 3
    assert [t["seed"] for t in trials[:7]] == [0] * 7  # seed-major


def test_cross_strategies_and_no_dense(study_configs):
    trials = study_configs([10, 50], [1e-3, 1e-4], ["balanced", "forest"], seeds=2,
                           dense=False, cross=True)
    assert len(trials) == 2 * 2 * 2 * 2
    assert {t["point_strategy"] for t in trials} == {"balanced", "forest"}
    assert all(t["points"] > 0 for t in trials)


def test_other_heads_and_depths_join_at_the_base_configuration(study_configs):
    trials = study_configs([10, 50], [1e-3, 1e-4], ["balanced"], seeds=2, base_lr=1e-3,
                           alternatives={"head": ["linear"], "encoder_stages": [4]})
    extra = [t for t in trials if "head" in t or "encoder_stages" in t]
    assert extra == [
        {"points": 50, "lr": 1e-3, "point_strategy": "balanced", "head": "linear", "seed": 0},
        {"points": 50, "lr": 1e-3, "point_strategy": "balanced", "encoder_stages": 4,
         "seed": 0},
        {"points": 50, "lr": 1e-3, "point_strategy": "balanced", "head": "linear", "seed": 1},
        {"points": 50, "lr": 1e-3, "point_strategy": "balanced", "encoder_stages": 4,
         "seed": 1},
    ]
    assert len(trials) == 2 * (3 + 1 + 2)  # (10|50 at 1e-3, 50 at 1e-4) + dense + 2 extra


def test_cross_multiplies_every_configuration_by_the_heads(study_configs):
    trials = study_configs([10, 50], [1e-3], ["balanced"], seeds=1, dense=False, cross=True,
                           alternatives={"head": ["linear"]})
    assert [(t["points"], t.get("head", "base")) for t in trials] == [
        (10, "base"), (50, "base"), (10, "linear"), (50, "linear")]


def test_zero_seeds_is_an_error(study_configs):
    from forest_seg.errors import ConfigError

    with pytest.raises(ConfigError, match="--seeds 0"):
        study_configs([10], [1e-4], ["balanced"], seeds=0)


@pytest.mark.slow
def test_the_grid_driver_imports_neither_torch_nor_scipy_before_it_starts_ray():
    """Its module imports are what stands between ``python sweeps/grid.py`` and Ray's start
    (the analysis, with pandas and scipy, comes later, while Ray starts)."""
    code = ("import sys; sys.path.insert(0, 'sweeps'); import grid; "
            "print(*(name in sys.modules for name in ('torch', 'scipy', 'forest_seg.analysis')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False", "False"]


def test_grid_smoke_test_writes_results_and_history(tmp_path):
    done = run_driver("grid.py", "--smoke-test", "--storage-path", tmp_path, "--name", "smoke",
                      prefix=TORCH_WATCH)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "driver imported torch: False" in done.stderr
    exp = tmp_path / "smoke"
    results = pd.read_csv(exp / "results.csv")
    history = pd.read_csv(exp / "history.csv")
    assert sorted(results["points"]) == [0, 10, 50]
    assert set(results["status"]) <= set(STATUSES)
    for column in ("lr", "seed", "point_strategy", "max_epochs", "val_iou", "val_miou",
                   "val_loss", "best_epoch", "best_val_iou", "best_val_miou", "epochs",
                   "train_time_s", "baseline_all_forest_miou", "baseline_colour_miou"):
        assert column in results.columns
    assert set(results["split"]) == {"scene"}  # the drivers validate on held-out scenes
    assert results["baseline_colour_miou"].between(0, 1).all()
    per_trial = history.groupby("trial_id")["epoch"].count()
    assert per_trial.to_dict() == results.set_index("trial_id")["epochs"].to_dict()
    assert (results["best_val_miou"] >= results["val_miou"]).all()
    assert "results: " in done.stdout and str(exp / "results.csv") in done.stdout
    table = done.stdout[done.stdout.index("val_miou"):]
    assert all(str(p) in table for p in ("10", "50"))
    # a compact console: a line per finished trial with its progress, no Ray tables or boxes
    finished = [line for line in done.stdout.splitlines() if line.startswith("trial ")]
    assert len(finished) == 3 and finished[0].startswith("trial 1/3 points=")
    assert "done, " in done.stdout and "best val_miou" in done.stdout
    console = done.stdout + done.stderr
    for noise in ("Pre-set value", "Trial status:", "started with configuration",
                  "Token authentication", "rebuilt"):  # its own files read back as written
        assert noise not in console
    # trial folders say what the trial is
    assert sorted(p.name.split("_")[0] for p in exp.glob("p*_s0_*")) == ["p0", "p10", "p50"]
    # each trial's best checkpoint is kept and named, relative to the experiment
    for folder in results["best_checkpoint"]:
        assert (exp / folder / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_asha_stops_hopeless_trials_and_fifo_does_not(tmp_path, sweep_driver, running_trials):
    """Both runs of grid.py (in this process, so that Ray's trial statuses can be watched)
    under --max-concurrent 1 with CPUs for two trials: one trial ran at a time, which also
    makes ASHA's decisions independent of which trial finishes first."""
    grid = sweep_driver("grid")
    common = ["--smoke-test", "--epochs", "3", "--max-concurrent", "1", "--points", "50",
              "--lrs", "1e-3", "1e-9", "--base-lr", "1e-3", "--no-dense", "--seeds", "2",
              "--cpus-per-trial", "1", "--storage-path", str(tmp_path)]
    assert grid.main([*common, "--name", "asha", "--grace-period", "1"]) == 0
    results = pd.read_csv(tmp_path / "asha" / "results.csv")
    stopped = results[results["status"] == "EARLY_STOPPED"]
    assert len(stopped) >= 1 and (stopped["epochs"] < 3).all()
    assert grid.main([*common, "--name", "fifo", "--scheduler", "fifo"]) == 0
    fifo_results = pd.read_csv(tmp_path / "fifo" / "results.csv")
    assert set(fifo_results["status"]) == {"COMPLETED"} and (fifo_results["epochs"] == 3).all()
    assert running_trials() == 1


@pytest.mark.parametrize(
    ("args", "culprit"),
    [(["--gpus-per-trial", "1"], "--gpus-per-trial 1"),
     (["--points", "-5"], "points=-5"),
     (["--strategies", "clicks"], "point_strategy='clicks'"),
     (["--data", "/nonexistent/forest"], "/nonexistent/forest"),
     (["--heads", "unet", "cubic"], "head='cubic'")],
)
def test_impossible_or_bad_requests_fail_at_once(tmp_path, args, culprit):
    done = run_driver("grid.py", "--smoke-test", "--storage-path", tmp_path, *args, timeout=180)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert culprit in lines[-1] and "Traceback" not in done.stderr


def test_a_search_driver_takes_one_head(tmp_path):
    done = run_driver("optuna_search.py", "--smoke-test", "--storage-path", tmp_path,
                      "--heads", "unet", "linear", timeout=180)
    assert done.returncode == 2
    assert "--head takes one value in optuna" in done.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    args = [sys.executable, str(ROOT / "sweeps" / "grid.py"), "--smoke-test", "--epochs", "3",
            "--max-concurrent", "1", "--seeds", "2", "--scheduler", "fifo",
            "--storage-path", str(tmp_path), "--name", "killed"]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env, start_new_session=True)
    exp = tmp_path / "killed"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once a trial has finished and another has started
        if (exp / "results.csv").is_file() and (exp / "history.csv").is_file():
            history = pd.read_csv(exp / "history.csv")
            if history["trial_id"].nunique() >= 2:
                break
        time.sleep(0.5)
    else:
        driver.kill()
        pytest.fail("the sweep never got to a second trial")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    finished_before = pd.read_csv(exp / "results.csv")["trial_id"].tolist()
    assert 1 <= len(finished_before) < 6
    history_before = pd.read_csv(exp / "history.csv")

    done = run_driver("grid.py", *args[2:], "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    results = pd.read_csv(exp / "results.csv")
    assert len(results) == 6 and results["trial_id"].is_unique
    assert set(results["status"]) == {"COMPLETED"}
    # No trial that finished before the kill trains again: its epochs keep the times they had.
    # (A warm worker starts the next trial at once, so the kill can land before Ray's
    # experiment snapshot recorded the finish; Ray then restarts the trial, which finds its
    # own final checkpoint and reports that last epoch once more, untrained.)
    history = pd.read_csv(exp / "history.csv")
    finished = history_before[history_before["trial_id"].isin(finished_before)]
    kept = finished.merge(history, on=["trial_id", "epoch"], suffixes=("", "_after"))
    assert len(kept) == len(finished) > 0
    assert (kept["epoch_time_s_after"] == kept["epoch_time_s"]).all()
    assert history.groupby("trial_id")["epoch"].apply(list).map(lambda e: e == [1, 2, 3]).all()


@pytest.mark.slow
def test_optuna_search_leaves_a_study_optuna_can_load(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    done = run_driver("optuna_search.py", "--smoke-test", "--num-trials", 3,
                      "--study-storage", url, "--storage-path", tmp_path, "--name", "tpe")
    assert done.returncode == 0, done.stderr[-3000:]
    results = pd.read_csv(tmp_path / "tpe" / "results.csv")
    assert len(results) == 3
    assert results["points"].between(5, 400).all() and results["lr"].between(1e-6, 1e-2).all()
    study = optuna.load_study(study_name="tpe", storage=url)
    assert len(study.trials) == 3
    assert {t.params["points"] for t in study.trials} == set(results["points"])


def test_cluster_yaml_passes_rays_launcher_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["max_workers"] >= 1
    assert any("pip install -e" in c for c in config["setup_commands"])


@pytest.mark.slow
def test_pbt_smoke_test_records_each_trials_lr_path(tmp_path):
    done = run_driver("pbt.py", "--smoke-test", "--epochs", 4, "--population", 2,
                      "--storage-path", tmp_path, "--name", "pbt")
    assert done.returncode == 0, done.stderr[-3000:]
    results = pd.read_csv(tmp_path / "pbt" / "results.csv")
    history = pd.read_csv(tmp_path / "pbt" / "history.csv")
    assert len(results) == 2 and set(results["status"]) <= set(STATUSES)
    assert results["lr"].between(1e-5, 1e-2).all()
    paths = history.groupby("trial_id")["lr"].apply(list)
    assert paths.map(len).eq(4).all()  # one lr per epoch, per trial
    assert all(min(path) >= 1e-5 and max(path) <= 1e-2 for path in paths)
    # whichever member exploits the other: each epoch's lr in history.csv is the lr of the
    # config Ray ran that epoch with (its result.json rows), and results.csv holds the last
    for trial_id, path in paths.items():
        result_file = next((tmp_path / "pbt").glob(f"*{trial_id}*/result.json"))
        configs = {row["epoch"]: row["config"]["lr"] for row in
                   map(json.loads, result_file.read_text().splitlines()) if retrained(row)}
        assert path == pytest.approx([configs[epoch] for epoch in (1, 2, 3, 4)])
    assert results.set_index("trial_id")["lr"].to_dict() == pytest.approx(
        paths.map(lambda path: path[-1]).to_dict())
    # no exploit at the last epoch (Ray's log of exploits: [to, from, to's step, from's step,
    # ...]): a member that cloned a finished one held the sweep forever
    global_log = tmp_path / "pbt" / "pbt_global.txt"
    steps = [json.loads(line)[2] for line in global_log.read_text().splitlines()] \
        if global_log.is_file() else []
    assert all(step < 4 for step in steps)


def test_pbt_lets_a_trials_last_epoch_pass():
    from ray.tune.schedulers import TrialScheduler

    from forest_seg.sweep.population import PopulationBasedTrainingBeforeLastEpoch

    pbt = PopulationBasedTrainingBeforeLastEpoch(
        time_attr="training_iteration", metric="val_miou", mode="max", perturbation_interval=1,
        hyperparam_mutations={"lr": [1e-3, 1e-4]}, synch=True)

    class Trial:  # a trial PBT has never seen: any bookkeeping of it would raise KeyError
        config = {"epochs": 4, "lr": 1e-3}

    last = {"epoch": 4, "training_iteration": 5, "val_miou": 0.5}
    assert pbt.on_trial_result(None, Trial(), last) == TrialScheduler.CONTINUE
    with pytest.raises(KeyError):  # an earlier epoch goes to Ray's PBT, as before
        pbt.on_trial_result(None, Trial(), {**last, "epoch": 3, "training_iteration": 3})


@pytest.mark.slow
def test_pbt_refuses_a_max_concurrent_below_its_population(tmp_path):
    done = run_driver("pbt.py", "--smoke-test", "--population", 3, "--max-concurrent", 2,
                      "--storage-path", tmp_path, "--name", "pbt", timeout=180)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--max-concurrent 2 for a population of 3" in done.stderr.strip().splitlines()[-1]


def test_budget_study_buys_each_labelling_its_tiles(sweep_driver):
    grid = sweep_driver("grid")
    model = grid.CostModel(seconds_per_point=2.0, seconds_per_mask=240.0)
    trials = grid.budget_configs([10, 50], [1.0, 2.0], "balanced", seeds=2, model=model,
                                 batch_size=8, base_lr=1e-3)
    seed0 = [(t["points"], t["max_train_tiles"]) for t in trials if t["seed"] == 0]
    # 1 h: 3600 s / 20 s = 180, / 100 s = 36, / 240 s = 15; 2 h doubles each
    assert seed0 == [(10, 180), (50, 36), (0, 15), (10, 360), (50, 72), (0, 30)]
    assert [t["seed"] for t in trials] == [0] * 6 + [1] * 6
    assert {t["lr"] for t in trials} == {1e-3}
    assert grid.budget_lines(trials, [1.0, 2.0]).splitlines()[0] == (
        "budget 1 h: 10 points 180 tiles, 50 points 36 tiles, dense 15 tiles")
    with pytest.raises(grid.ConfigError, match="buys 7 tile.* of dense .*--batch-size 8"):
        grid.budget_configs([10], [0.5], "balanced", 1, model, batch_size=8)
    assert {(t["max_train_tiles"], t["budget_hours"]) for t in trials if t["points"] == 0} == {
        (15, 1.0), (30, 2.0)}
    # equal steps: every epoch visits the most tiles any trial bought, unless given
    base = grid.TrainConfig(batch_size=8)
    assert grid.equal_steps(base, trials).epoch_tiles == 360
    assert grid.equal_steps(base.replace(epoch_tiles=64), trials).epoch_tiles == 64
