"""forest_seg.sweep: the typed Study and Launch, the drivers' shared flags, and run() called
twice in one process (as a notebook does), its experiment restorable from any folder."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from forest_seg.errors import ConfigError
from forest_seg.results import STATUSES
from forest_seg.sweep import Asha, Launch, Study, preset_config, run
from forest_seg.sweep.flags import base_config, build_parser, launch_from_args
from forest_seg.sweep.runner import trial_resources

CPU_NODE = [{"CPU": 2.0, "GPU": 0.0}]
GPU_NODE = [{"CPU": 8.0, "GPU": 1.0}]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser("test", "").parse_args(list(argv))


def test_a_study_is_a_grid_or_a_search_not_both():
    base = preset_config("smoke")
    with pytest.raises(ConfigError, match="either trials"):
        Study(base=base)
    with pytest.raises(ConfigError, match="either trials"):
        Study(base=base, trials=[{"points": 10}], space={"lr": 1e-3}, samples=1)
    with pytest.raises(ConfigError, match="samples"):
        Study(base=base, space={"lr": 1e-3})
    with pytest.raises(ConfigError, match="driver"):
        Study(base=base, trials=[{"points": 10}], driver="My Driver")


def test_every_trial_is_checked_before_anything_runs():
    base = preset_config("smoke")
    with pytest.raises(ConfigError, match="point_strategy='clicks'"):
        Study(base=base, trials=[{"points": 10}, {"point_strategy": "clicks"}])
    with pytest.raises(ConfigError, match="pointz"):
        Study(base=base, space={"pointz": 5}, samples=2)
    study = Study(base=base, trials=[{"points": 10, "seed": 1}, {"points": 50, "seed": 1}])
    assert [c.points for c in study.trial_configs()] == [10, 50]
    assert study.description() == {"trials": 2, "varies": {"points": [10, 50], "seed": [1]}}


def test_param_space_is_the_base_with_the_space_over_it():
    study = Study(base=preset_config("smoke", points=20), space={"lr": 1e-3, "seed": 4},
                  samples=3)
    space = study.param_space()
    assert space == {**preset_config("smoke", points=20).to_dict(), "lr": 1e-3, "seed": 4}
    assert study.trial_configs()[0].seed == 4


def test_presets_and_the_auto_choice():
    assert preset_config("smoke").image_size == 32 and preset_config("cpu").epochs == 6
    args = parse("--epochs", "3")
    assert base_config(args, CPU_NODE, "grid").encoder_stages == 2  # cpu preset
    assert base_config(args, GPU_NODE, "grid").encoder_stages == 4  # paper preset
    assert base_config(args, GPU_NODE, "grid").epochs == 3  # a flag beats the preset
    assert base_config(parse("--smoke-test"), GPU_NODE, "grid").image_size == 32
    with pytest.raises(ConfigError, match="invalid preset"):
        preset_config("huge")


def test_multi_valued_flags_give_the_first_value_and_only_grid_takes_several():
    args = parse("--heads", "unet", "linear", "--encoder-stages", "3")
    base = base_config(args, CPU_NODE, "grid", several=True)
    assert (base.head, base.encoder_stages) == ("unet", 3)
    with pytest.raises(ConfigError, match="--head takes one value in pbt"):
        base_config(args, CPU_NODE, "pbt")


def test_launch_from_flags_without_touching_the_namespace():
    args = parse("--max-failures", "0", "--name", "x")
    before = dict(vars(args))
    launch = launch_from_args(args, max_concurrent=2)
    assert vars(args) == before
    assert (launch.max_concurrent, launch.max_failures, launch.name) == (2, 0, "x")
    assert launch_from_args(parse("--max-concurrent", "5"), max_concurrent=2).max_concurrent == 5
    with pytest.raises(ConfigError, match="--max-concurrent 0"):
        Launch(max_concurrent=0)


def test_experiment_names_and_resuming_the_newest(tmp_path):
    launch = Launch(storage_path=str(tmp_path))
    storage, name = launch.experiment("grid")
    assert storage == str(tmp_path) and name.startswith("grid-")
    assert replace(launch, name="mine").experiment("grid") == (str(tmp_path), "mine")
    with pytest.raises(ConfigError, match="no grid experiment to resume"):
        replace(launch, resume=True).experiment("grid")
    for folder in ("grid-1", "pbt-2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "tuner.pkl").write_bytes(b"")
    assert replace(launch, resume=True).experiment("grid")[1] == "grid-1"


def test_trial_resources_defaults_and_impossible_requests():
    assert trial_resources(Launch(), CPU_NODE) == {"cpu": 1.0, "gpu": 0.0}
    assert trial_resources(Launch(), GPU_NODE) == {"cpu": 2.0, "gpu": 1.0}
    with pytest.raises(ConfigError, match="--gpus-per-trial 1"):
        trial_resources(Launch(gpus_per_trial=1), CPU_NODE)
    assert trial_resources(Launch(gpus_per_trial=1, wait_for_nodes=True), CPU_NODE)["gpu"] == 1


def test_asha_grace_defaults_to_a_third_of_the_epochs():
    assert (Asha().grace(6), Asha().grace(7), Asha().grace(2)) == (2, 3, 1)
    assert Asha(grace_period=4).grace(6) == 4
    with pytest.raises(ConfigError, match="--grace-period 7"):
        Asha(grace_period=7).grace(6)
    with pytest.raises(ConfigError, match="--reduction-factor 1"):
        Asha(reduction_factor=1).grace(6)


RESTORE = """
import sys
from ray import tune
from forest_seg.train import trainable
path = sys.argv[1]
print("trials", len(tune.ExperimentAnalysis(path).trials))
tuner = tune.Tuner.restore(path, trainable)
print("restored", type(tuner).__name__)
"""


@pytest.mark.slow
def test_run_twice_in_one_process_then_restore_from_any_folder(tmp_path):
    """A notebook: two sweeps in one process, each a results frame with its driver; then
    Ray Tune restores the experiment from an unrelated folder (no sweeps/ on the path)."""
    import ray

    base = preset_config("smoke", epochs=1)
    launch = Launch(storage_path=str(tmp_path / "runs"), verbose=0)
    first = run(Study(base=base, trials=[{"points": 10}, {"points": 50}], scheduler=None,
                      driver="notebook"), replace(launch, name="first"))
    assert not ray.is_initialized()  # what run() started, it shut down
    second = run(Study(base=base, space={"lr": 1e-3}, samples=1, driver="notebook"),
                 replace(launch, name="second"))
    assert sorted(first["points"]) == [10, 50] and len(second) == 1
    for frame in (first, second):
        assert set(frame["driver"]) == {"notebook"} and set(frame["status"]) <= set(STATUSES)
        assert (frame["epochs"] == 1).all()
    path = first.attrs["experiment"]
    assert path == str(tmp_path / "runs" / "first")
    assert pd.read_csv(f"{path}/results.csv")["trial_id"].tolist() == first["trial_id"].tolist()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-c", RESTORE, path], capture_output=True,
                          text=True, timeout=300, cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trials 2" in done.stdout and "restored Tuner" in done.stdout


@pytest.mark.slow
def test_run_uses_a_ray_it_did_not_start_and_keeps_it(tmp_path, local_ray):
    with local_ray(num_cpus=1) as ray:
        results = run(Study(base=preset_config("smoke", epochs=1), trials=[{"points": 10}],
                            driver="grid"),
                      Launch(storage_path=str(tmp_path), name="kept", verbose=0))
        assert ray.is_initialized()
    assert results["driver"].tolist() == ["grid"] and results["points"].tolist() == [10]


@pytest.mark.slow
def test_connect_starts_its_own_ray_whatever_ray_address_says(monkeypatch):
    import ray

    from forest_seg.sweep import connect

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # a cluster that is not there
    with connect() as nodes:
        assert ray.get_runtime_context().gcs_address != "127.0.0.1:9"
        assert len(nodes) == 1 and nodes[0]["CPU"] >= 1
    assert not ray.is_initialized()


def test_closing_text_of_a_sweep_without_finished_trials():
    from forest_seg.sweep import closing_text

    empty = pd.DataFrame()
    empty.attrs["experiment"] = "/runs/x"
    assert closing_text(empty) == ("no trial finished; results: /runs/x/results.csv  "
                                   "(per epoch: /runs/x/history.csv)")


def test_results_files_record_the_epochs_a_resumed_trial_restored(tmp_path):
    """A driver interrupted after a trial's epoch-2 checkpoint but before it recorded epoch 2:
    the resumed trial's first report (epoch 3) carries epochs 1-2 from its checkpoint, and the
    writer adds the one it lacks without overwriting the one it has."""
    from types import SimpleNamespace

    from forest_seg.results import RESTORED_EPOCHS
    from forest_seg.sweep.callbacks import ResultsFiles

    def epoch(n, miou):
        return {"epoch": n, "val_miou": miou, "train_loss": 0.1, "diverged": False}

    trial = SimpleNamespace(trial_id="t1", config={"points": 50, "epochs": 3},
                            last_result={"time_total_s": 3.0})
    writer = ResultsFiles(str(tmp_path))
    writer.on_trial_result(0, [], trial, epoch(1, 0.5))  # recorded before the interruption
    resumed = {**epoch(3, 0.7), RESTORED_EPOCHS: [epoch(1, 0.99), epoch(2, 0.6)]}
    writer.on_trial_result(1, [], trial, resumed)
    writer.on_trial_complete(2, [], trial)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history["val_miou"].tolist() == [0.5, 0.6, 0.7]  # epoch 1 as first recorded
    assert RESTORED_EPOCHS not in history.columns
    results = pd.read_csv(tmp_path / "results.csv")
    assert results.loc[0, "epochs"] == 3 and results.loc[0, "status"] == "COMPLETED"


def test_results_hold_the_config_of_the_last_epoch_a_trial_trained(tmp_path):
    """PBT exploits after a trial's last epoch: Ray changes the trial's config, which never
    trains; results.csv keeps the config that trained the last epoch (history.csv's lr)."""
    from types import SimpleNamespace

    from forest_seg.sweep.callbacks import ResultsFiles

    trial = SimpleNamespace(trial_id="t1", config={"lr": 1e-3, "epochs": 2}, last_result={})
    writer = ResultsFiles(str(tmp_path))
    for epoch in (1, 2):
        writer.on_trial_result(epoch, [], trial, {"epoch": epoch, "val_miou": 0.5, "lr": 1e-3,
                                                  "config": dict(trial.config)})
    trial.config = {"lr": 1.2e-3, "epochs": 2}  # perturbed after epoch 2
    writer.on_trial_complete(3, [], trial)
    results = pd.read_csv(tmp_path / "results.csv")
    assert results.loc[0, "lr"] == 1e-3 and results.loc[0, "epochs"] == 2


def test_results_files_name_each_epochs_checkpoint_and_the_best_kept(tmp_path):
    from types import SimpleNamespace

    from forest_seg.sweep.callbacks import ResultsFiles

    trial = SimpleNamespace(trial_id="t1", config={"points": 50, "epochs": 3}, last_result={},
                            status="RUNNING")
    writer = ResultsFiles(str(tmp_path))
    for number, miou in ((1, 0.5), (2, 0.7), (3, 0.6)):
        result = {"epoch": number, "val_miou": miou, "train_loss": 0.1, "diverged": False}
        writer.on_trial_result(0, [trial], trial, result)
        trial.last_result = result
        folder = tmp_path / "p50_t1" / f"checkpoint_00000{number - 1}"
        if number != 2:  # Ray deleted epoch 2's checkpoint
            folder.mkdir(parents=True)
        writer.on_checkpoint(0, [trial], trial, SimpleNamespace(path=str(folder)))
    writer.on_trial_complete(0, [trial], trial)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["checkpoint"].tolist() == [f"p50_t1/checkpoint_00000{i}" for i in range(3)]
    results = pd.read_csv(tmp_path / "results.csv")
    assert results.loc[0, "best_checkpoint"] == "p50_t1/checkpoint_000002"  # best still kept


def test_clip_to_range_keeps_a_perturbed_lr_within_its_bounds():
    import pickle

    from forest_seg.sweep.study import ClipToRange

    clip = ClipToRange((("lr", 1e-5, 1e-2),))
    assert clip({"lr": 1.2e-2, "gamma": 2.0}) == {"lr": 1e-2, "gamma": 2.0}  # 1e-2 * 1.2
    assert clip({"lr": 0.8e-5})["lr"] == 1e-5 and clip({"lr": 3e-4})["lr"] == 3e-4
    assert pickle.loads(pickle.dumps(clip)) == clip  # Ray stores it with the experiment


def test_max_concurrent_limits_every_kind_of_searcher():
    """Ray ignores max_concurrent_trials for a BasicVariantGenerator instance (a grid, PBT's
    seeded population): the limit goes into the generator, or into Ray's ConcurrencyLimiter
    around a Searcher (Optuna); a PBT population larger than the limit is refused."""
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from forest_seg.sweep.concurrency import limit_concurrency

    assert limit_concurrency(None, 2).max_concurrent == 2  # random sampling
    grid = BasicVariantGenerator(points_to_evaluate=[{"points": 10}, {"points": 50}])
    limited = limit_concurrency(grid, 1)
    assert isinstance(limited, BasicVariantGenerator) and limited.max_concurrent == 1
    assert grid.max_concurrent == 0  # the caller's generator is left as it was
    assert limit_concurrency(grid, None) is grid
    optuna = OptunaSearch(metric="val_miou", mode="max")
    wrapped = limit_concurrency(optuna, 3)
    assert isinstance(wrapped, ConcurrencyLimiter) and wrapped.searcher is optuna
    assert wrapped.max_concurrent == 3 and limit_concurrency(wrapped, 3) is wrapped
    with pytest.raises(ConfigError, match="already a ConcurrencyLimiter of 3"):
        limit_concurrency(wrapped, 2)
    pbt = PopulationBasedTraining(time_attr="training_iteration",
                                  hyperparam_mutations={"lr": [1e-3, 1e-4]})
    with pytest.raises(ConfigError, match="--max-concurrent 1 for a population of 2"):
        limit_concurrency(grid, 1, pbt, samples=2)
    assert limit_concurrency(grid, 2, pbt, samples=2).max_concurrent == 2


def test_an_input_error_ends_a_trial_at_once_and_other_failures_are_retried(monkeypatch):
    """Ray's own Trial bookkeeping (max_failures=2) with the sweeps' callback: a DatasetError
    raised in the trial is not recovered; a dead worker and a RuntimeError are, twice."""
    from ray.exceptions import RayActorError, RayTaskError
    from ray.tune.experiment import Trial

    from forest_seg.errors import DatasetError
    from forest_seg.sweep.trial_errors import TrialFailures, error_line, trial_error_line

    monkeypatch.setattr(Trial, "local_path", property(lambda self: None))  # no error files

    def raised_in_trial(exc):  # what ray.get raises in the driver
        return RayTaskError("train", "Traceback ...", exc).as_instanceof_cause()

    def started_trial():
        trial = Trial("trainable", stub=True, max_failures=2)
        TrialFailures().on_trial_start(0, [trial], trial)
        return trial

    transient = started_trial()
    transient.handle_error(RayActorError())  # the worker died
    assert transient.should_recover()
    transient.handle_error(raised_in_trial(RuntimeError("CUDA out of memory")))
    assert transient.should_recover()
    transient.handle_error(RayActorError())
    assert not transient.should_recover()  # Ray's budget of 2 retries is spent
    bad = started_trial()
    bad.handle_error(raised_in_trial(DatasetError("data=/d: 1 tile\nsecond line")))
    assert bad.run_metadata.num_failures == 1 and not bad.should_recover()
    assert trial_error_line(bad) == "DatasetError: data=/d: 1 tile"
    assert trial_error_line(transient) == f"RayActorError: {RayActorError()}"  # the last
    assert error_line(raised_in_trial(DatasetError("data=/d: 1 tile\nsecond line"))) == \
        "DatasetError: data=/d: 1 tile"
    assert error_line(RayActorError()) == f"RayActorError: {RayActorError()}"


def _kill_first_reporting_worker(experiment: Path, killed: list, stop) -> None:
    """Kill (SIGKILL) the worker process of the first trial that reports an epoch."""
    while not stop.is_set():
        for result in experiment.glob("*/result.json"):
            lines = result.read_text().splitlines()
            if lines:
                os.kill(json.loads(lines[0])["pid"], signal.SIGKILL)
                killed.append(result.parent.name)
                return
        stop.wait(0.1)


@pytest.mark.slow
def test_a_limited_sweep_records_errors_and_retries_only_what_can_change(tmp_path,
                                                                         running_trials):
    """Three trials with room for all three at once, under max_concurrent=1: one trial's data
    is bad (a training split smaller than a batch), another's worker is killed after the first
    of its four epochs. At most one trial ran at any time; the bad trial was attempted once
    and its row says why; the killed one was retried from its checkpoint and completed."""
    import threading

    exp = tmp_path / "errors"
    killed: list[str] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_reporting_worker, args=(exp, killed, stop))
    killer.start()
    try:
        results = run(
            Study(base=preset_config("smoke", epochs=2), scheduler=None,
                  trials=[{"seed": 0, "max_tiles": 200, "epochs": 4}, {"seed": 1, "max_tiles": 2},
                          {"seed": 2}]),
            Launch(storage_path=str(tmp_path), name="errors", cpus_per_trial=0.5,
                   max_concurrent=1, max_failures=2, verbose=0))
    finally:
        stop.set()
        killer.join()
    assert running_trials() == 1
    rows = results.set_index("seed")
    assert rows["status"].to_dict() == {0: "COMPLETED", 1: "ERROR", 2: "COMPLETED"}
    assert rows["epochs"].to_dict() == {0: 4, 1: 0, 2: 2}
    assert rows.loc[1, "error"].startswith("DatasetError: data=")
    assert "fewer than batch_size=8" in rows.loc[1, "error"]
    assert rows[["error"]].drop(index=1).isna().all().all()
    assert pd.read_csv(tmp_path / "errors" / "results.csv").set_index("seed").loc[1, "error"] \
        == rows.loc[1, "error"]

    def folder(seed: int) -> Path:
        return next(p for p in exp.iterdir() if rows.loc[seed, "trial_id"] in p.name)

    # attempted once, though max_failures=2: Ray logs each failure as "Failure # <n>"
    assert (folder(1) / "error.txt").read_text().count("Failure #") == 1
    assert len(killed) == 1 and rows.loc[0, "trial_id"] in killed[0]
    reports = [json.loads(line) for line in (folder(0) / "result.json").read_text().splitlines()]
    assert [r["training_iteration"] for r in reports] == [1, 2, 3, 4]
    # retried from a checkpoint: a report after the kill counts its iterations from there
    assert any(r["iterations_since_restore"] < r["training_iteration"] for r in reports)
