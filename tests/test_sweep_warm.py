"""Trial start-up paid once: the driver decodes the tiles before any trial starts, the worker
Ray starts ahead imports the trial code before a trial is handed to it, and one Tune worker
process runs trial after trial with its imports and memory-mapped tiles kept warm."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from forest_seg import data as data_module
from forest_seg.cache import cache_dir
from forest_seg.config import TrainConfig
from forest_seg.sweep import Launch, Study, preset_config, run
from forest_seg.sweep.warm import decode_tiles, trial_worker_env
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


@pytest.mark.slow
def test_one_worker_runs_both_trials_on_the_tiles_the_driver_decoded(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    root = make_synthetic_dataset(tmp_path / "data", n=24, size=32, seed=5)
    study = Study(base=preset_config("smoke", data=str(root), epochs=1),
                  trials=[{"points": 10}, {"points": 50}], scheduler=None, driver="grid")
    import ray

    # one CPU: room for one trial worker at a time, so a second process would show; the
    # runtime environment connect() starts a local Ray with (the worker Ray starts ahead
    # imports the trial code)
    ray.init(num_cpus=1, _node_ip_address="127.0.0.1", include_dashboard=False,
             log_to_driver=False, runtime_env=trial_worker_env())
    try:
        run(study, Launch(storage_path=str(tmp_path / "runs"), name="warm", cpus_per_trial=1,
                          verbose=0))
    finally:
        ray.shutdown()
    history = pd.read_csv(tmp_path / "runs" / "warm" / "history.csv")
    first = history[history["epoch"] == 1].sort_values("startup_worker_trial")
    assert len(first) == 2 and first["startup_worker_pid"].nunique() == 1  # one process
    assert first["startup_worker_trial"].tolist() == [1, 2]
    assert first["startup_tiles_decoded"].tolist() == [0, 0]  # the driver had decoded them
    assert first["startup_tiles_mapped"].tolist() == [1, 1]  # mapped once, by the first trial
    second = first.iloc[1]
    assert second["startup_process_s"] == 0.0 and second["startup_imports_s"] == 0.0
    # the first trial found its worker's imports done (idle is exactly 0 in a worker that
    # imported on the trial's time); the second paid nothing
    assert first.iloc[0]["startup_idle_s"] > 0.0 and second["startup_idle_s"] == 0.0
