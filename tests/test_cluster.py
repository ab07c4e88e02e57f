"""Fault tolerance on a two-node Ray cluster on 127.0.0.1: trials run on both nodes, and a
sweep whose worker node is removed mid-run still completes every trial from checkpoints."""

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest


def _wait_for_two_running_trials(history: Path, deadline: float) -> bool:
    while time.time() < deadline:
        if history.is_file():
            frame = pd.read_csv(history)
            if frame["trial_id"].nunique() >= 2:
                return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_sweep_survives_losing_a_worker_node(tmp_path, sweep_driver):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    exp = tmp_path / "faults"
    removed = threading.Event()

    def remove_worker_mid_sweep():
        if _wait_for_two_running_trials(exp / "history.csv", time.time() + 240):
            cluster.remove_node(worker)
            removed.set()

    killer = threading.Thread(target=remove_worker_mid_sweep, daemon=True)
    killer.start()
    try:
        status = sweep_driver("grid").main([
            # 12 short epochs: the worker's trial is still running when its node goes (with 6,
            # on a fast machine, it could finish before the removal landed)
            "--address", cluster.address, "--smoke-test", "--epochs", "12", "--image-size", "48",
            "--encoder-stages", "2", "--max-tiles", "64", "--points", "10", "50", "--no-dense",
            "--seeds", "1", "--scheduler", "fifo", "--cpus-per-trial", "1",
            "--max-failures", "2", "--checkpoint-minutes", "0",  # resume from any epoch
            "--storage-path", str(tmp_path), "--name", "faults",
        ])
    finally:
        killer.join(timeout=5)
        ray.shutdown()
        cluster.shutdown()
    assert status == 0
    assert removed.is_set(), "two trials never ran at once, so the worker node was never used"
    results = pd.read_csv(exp / "results.csv")
    assert len(results) == 2 and results["trial_id"].is_unique
    assert set(results["status"]) == {"COMPLETED"} and (results["epochs"] == 12).all()
    restored = []
    for result_file in exp.glob("*/result.json"):
        rows = [json.loads(line) for line in result_file.read_text().splitlines() if line]
        if any(r["iterations_since_restore"] < r["training_iteration"] for r in rows):
            restored.append(result_file.parent.name)
    assert restored, "no trial was resumed from a checkpoint after its node was removed"
