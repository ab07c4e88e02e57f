"""Trial start-up paid once: the driver decodes the tiles before any trial starts, the workers
a local Ray starts ahead import the trial code and host the first trials, and one Tune worker
process runs trial after trial with its imports and memory-mapped tiles kept warm; the local
Ray stops quickly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from bench.proctree import command_line, descendants, process_stats
from forest_seg import data as data_module
from forest_seg.cache import cache_dir
from forest_seg.config import TrainConfig
from forest_seg.sweep import Launch, Study, connect, preset_config, run
from forest_seg.sweep.local_ray import local_trial_actors, stop_autoscaler_monitor, tune_actor_env
from forest_seg.sweep.warm import decode_tiles
from forest_seg.synthetic import make_synthetic_dataset


def test_the_driver_decodes_every_dataset_and_size_its_trials_use(tmp_path):
    train = make_synthetic_dataset(tmp_path / "train", n=4, size=32, seed=1)
    held_out = make_synthetic_dataset(tmp_path / "held-out", n=3, size=32, seed=2)
    base = TrainConfig(data=str(train), val_data=str(held_out), image_size=16, batch_size=2,
                       pretrained="none", device="cpu")
    study = Study(base=base, trials=[{"points": 5}, {"points": 5, "image_size": 24}])
    before = data_module.TILE_CACHE_EVENTS["decoded"]
    decode_tiles(study)
    assert data_module.TILE_CACHE_EVENTS["decoded"] - before == 4  # 2 datasets x 2 sizes
    entries = {}
    for manifest in (cache_dir() / "tiles").glob("*/manifest.json"):
        info = json.loads(manifest.read_text())
        entries.setdefault(info["tiles"], set()).add(info["size"])
    assert {16, 24} <= entries[4] and {16, 24} <= entries[3]
    decode_tiles(study)  # a second sweep in this process decodes nothing again
    assert data_module.TILE_CACHE_EVENTS["decoded"] - before == 4


def prestarted_workers(count: int, timeout_s: float = 60.0) -> set[int]:
    """The ``count`` idle workers a new local Ray starts by itself (waits for them)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        below = descendants(process_stats(), os.getpid())
        idle = {pid for pid in below if command_line(pid).startswith("ray::IDLE")}
        if len(idle) >= count:
            return idle
        time.sleep(0.2)
    raise AssertionError(f"the local Ray started no {count} idle worker(s) in {timeout_s} s")


@pytest.mark.slow
def test_the_trials_run_on_the_workers_ray_started_warm_and_reuse_them(tmp_path, monkeypatch):
    """The first trial lands on a worker Ray started before the sweep began, which had
    imported the trial code by itself; the second trial reuses that process."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    root = make_synthetic_dataset(tmp_path / "data", n=24, size=32, seed=5)
    study = Study(base=preset_config("smoke", data=str(root), epochs=1),
                  trials=[{"points": 10}, {"points": 50}], scheduler=None, driver="grid")
    import ray

    # one CPU: room for one trial worker at a time, so a second process would show
    with connect(num_cpus=1):
        prestarted = prestarted_workers(1)
        run(study, Launch(storage_path=str(tmp_path / "runs"), name="warm", cpus_per_trial=1,
                          verbose=0))
    assert not ray.is_initialized()
    history = pd.read_csv(tmp_path / "runs" / "warm" / "history.csv")
    first = history[history["epoch"] == 1].sort_values("startup_worker_trial")
    assert len(first) == 2 and first["startup_worker_pid"].nunique() == 1  # one process
    assert int(first.iloc[0]["startup_worker_pid"]) in prestarted  # started before the sweep
    assert first["startup_worker_trial"].tolist() == [1, 2]
    assert first["startup_tiles_decoded"].tolist() == [0, 0]  # the driver had decoded them
    assert first["startup_tiles_mapped"].tolist() == [1, 1]  # mapped once, by the first trial
    second = first.iloc[1]
    assert second["startup_process_s"] == 0.0 and second["startup_imports_s"] == 0.0
    # the first trial found its worker's imports done (idle is exactly 0 in a worker that
    # imported on the trial's time); the second paid nothing
    assert first.iloc[0]["startup_idle_s"] > 0.0 and second["startup_idle_s"] == 0.0


def test_trial_actors_get_an_empty_runtime_environment_and_its_variables_are_inherited(
        monkeypatch):
    """Inside local_trial_actors, Ray Tune's trial actor class carries no environment
    variables of its own (so Ray may hand it a prestarted worker), and the variables it
    would carry are in this process's environment, which a local Ray's workers inherit."""
    from ray.tune.execution import class_cache

    monkeypatch.delenv("PL_DISABLE_FORK", raising=False)
    expected = tune_actor_env()
    assert expected.get("PL_DISABLE_FORK") == "1"  # Ray Tune's default
    with local_trial_actors() as patched:
        assert patched
        remote = class_cache._ActorClassCache().get(type("Trial", (), {}))
        assert not remote._default_options["runtime_env"].get("env_vars")
        assert {k: os.environ.get(k) for k in expected} == expected
    assert "PL_DISABLE_FORK" not in os.environ  # restored
    assert class_cache.DEFAULT_ENV_VARS == {"PL_DISABLE_FORK": "1"}


def test_stopping_a_local_ray_stops_its_autoscaler_monitor_first(monkeypatch):
    """stop_autoscaler_monitor ends the monitor process (ray.shutdown would wait a second for
    it, after the GCS it reports to is gone)."""
    import ray
    from ray._private import worker
    from ray._private.ray_constants import PROCESS_TYPE_MONITOR

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with connect(num_cpus=1):
        monitor = worker._global_node.all_processes[PROCESS_TYPE_MONITOR][0].process
        assert monitor.poll() is None
        assert stop_autoscaler_monitor()
        assert monitor.wait(timeout=10) is not None
        assert ray.is_initialized()  # the rest of Ray still runs
    assert not ray.is_initialized()


def test_a_new_local_ray_is_started_while_the_driver_imports_ray_tune():
    """A fresh driver process: by the time ray.init returns, Ray Tune and the analysis behind
    the closing table are imported (a thread imported them while Ray started)."""
    code = ("import sys\n"
            "from forest_seg.sweep.local_ray import local_ray\n"
            "with local_ray(num_cpus=1):\n"
            "    print('ray.tune' in sys.modules, 'forest_seg.analysis' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True"]
