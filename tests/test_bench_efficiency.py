"""The benchmark's sweep-efficiency part: the figures computed from a sweep's history.csv,
the slots read from the driver's log, ``--only``; and one real run of the part, scaled down."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.__main__ import build_parser, parts_to_run
from bench.grid_efficiency import STARTUP_PARTS, efficiency_summary, slot_time, slots_from_log
from forest_seg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def history() -> pd.DataFrame:
    """Three trials of 3, 3 and 2 epochs; trial a started worker 11, b reused it, c started
    worker 12. Only a's last epoch and b's last epoch wrote a checkpoint."""
    rows = [
        # trial, epoch, epoch s, checkpoint s, then a first report's start-up
        ("a", 1, 12.0, 0.0, {"pid": 11, "n": 1, "process": 3.0, "imports": 4.0, "idle": 2.0,
                             "data": 1.0, "points": 0.5, "baselines": 0.2,
                             "model": 0.2, "decoded": 0}),
        ("a", 2, 10.0, 0.0, None), ("a", 3, 10.0, 0.4, None),
        ("b", 1, 11.0, 0.0, {"pid": 11, "n": 2, "process": 0.0, "imports": 0.0, "idle": 0.0,
                             "data": 0.0, "points": 0.3, "baselines": 0.1,
                             "model": 0.1, "decoded": 0}),
        ("b", 2, 10.0, 0.0, None), ("b", 3, 9.0, 0.6, None),
        ("c", 1, 14.0, 0.0, {"pid": 12, "n": 1, "process": 5.0, "imports": 6.0, "idle": 0.0,
                             "data": 3.0, "points": 0.7, "baselines": 0.6,
                             "model": 0.4, "decoded": 1}),
        ("c", 2, 10.0, 0.0, None),
    ]
    records = []
    for trial, epoch, seconds, saved, start in rows:
        row = {"trial_id": trial, "epoch": epoch, "epoch_time_s": seconds, "checkpoint_s": saved}
        if start:
            row.update({"startup_worker_pid": start["pid"], "startup_worker_trial": start["n"],
                        "startup_tiles_decoded": start["decoded"],
                        **{f"startup_{p}_s": start[p]
                           for p in STARTUP_PARTS}})
        records.append(row)
    return pd.DataFrame(records)


def test_efficiency_summary_of_a_hand_made_history():
    r = efficiency_summary(history(), wall_s=50.0, slots=2)
    assert r["epoch_s"] == 86.0 and r["efficiency"] == pytest.approx(86.0 / 100.0)
    assert (r["trials"], r["trial_epochs"], r["workers"]) == (3, 8, 2)
    assert (r["fresh_trials"], r["reused_trials"]) == (2, 1)
    assert r["fresh_process"] == 4.0 and r["fresh_imports"] == 5.0  # medians of a and c
    assert r["fresh_idle"] == 1.0 and r["reused_idle"] == 0.0
    assert r["fresh_data"] == 2.0 and r["reused_data"] == 0.0 and r["reused_points"] == 0.3
    assert r["fresh_baselines"] == pytest.approx(0.4) and r["reused_model"] == 0.1
    assert r["tiles_decoded"] == 1.0
    # first epoch minus the median of the later ones: a 2, b 1.5, c 4 -> median 2
    assert r["warmup_s"] == 2.0
    assert r["checkpoints"] == 2 and r["checkpoint_s"] == pytest.approx(1.0)
    assert r["checkpoint_per_epoch_s"] == pytest.approx(1.0 / 8)


def test_a_history_without_start_up_columns_gives_nan_not_an_error():
    old = history()[["trial_id", "epoch", "epoch_time_s"]]
    r = efficiency_summary(old, wall_s=43.0, slots=2)
    assert r["efficiency"] == pytest.approx(86.0 / 86.0)
    assert math.isnan(r["fresh_process"]) and math.isnan(r["workers"])
    assert math.isnan(r["checkpoints"]) and math.isnan(r["checkpoint_per_epoch_s"])


def test_slots_are_the_cores_over_the_cpus_per_trial_at_most_the_trials():
    line = "grid: " + json.dumps({"experiment": "/x", "resources": {"cpu": 1.0, "gpu": 0.0}})
    log = "$ python sweeps/grid.py\n" + line + "\nmore output\n"
    assert slots_from_log(log, cpus=2, trials=21) == 2
    assert slots_from_log(log, cpus=2, trials=1) == 1
    assert slots_from_log(log.replace('"cpu": 1.0', '"cpu": 2.0'), cpus=2, trials=21) == 1
    with pytest.raises(ValueError, match="per-trial resources"):
        slots_from_log("$ python sweeps/grid.py\nerror: no data\n", cpus=2, trials=3)


def test_only_runs_the_parts_named_and_excludes_skip():
    parser = build_parser()
    assert parts_to_run(parser.parse_args(["--only", "efficiency"])) == ["efficiency"]
    assert parts_to_run(parser.parse_args(["--skip", "memory", "gpu"])) == [
        "throughput", "data", "sweep", "efficiency"]
    with pytest.raises(ConfigError, match="--only or --skip"):
        parts_to_run(parser.parse_args(["--only", "efficiency", "--skip", "gpu"]))


@pytest.mark.slow
def test_only_efficiency_runs_the_grid_and_ends_with_its_figure(tmp_path):
    """The part alone through a real sweeps/grid.py run, scaled to one seed."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "efficiency", "--efficiency-seeds", "1",
         "--cpus", "2", "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("sweep efficiency: ")
    assert 0 < float(lines[-1].rsplit(" ", 1)[1]) <= 1
    assert "start-up, fresh worker" in done.stdout and "checkpoints written" in done.stdout
    frame = pd.read_csv(tmp_path / "work" / "grid-efficiency" / "history.csv")
    assert frame["trial_id"].nunique() == 7  # the default study at one seed
    # where the slot time went, in six figures (n/a if the trials stopped reporting when
    # their epochs ended or started)
    row = next(line for line in lines if "slot-seconds outside epochs" in line)
    figures = row.rsplit("  ", 1)[-1].split()  # "12.9 / 1.8 / ... s"
    numbers = [float(f) for f in figures if f not in ("/", "s")]
    assert len(numbers) == 6 and min(numbers) >= 0
    assert frame["finished_at"].notna().all()


def test_slot_time_accounts_for_every_slot_second_outside_the_epochs():
    """Two workers, driver from t=100 to t=160. Worker 11: trial a starts at 105, epochs
    106-116 and 117-127 (1 s of report between), trial b starts at 128, epoch 129-139, then
    idle. Worker 12: trial c starts at 107, epochs 108-120 and 121-150, the sweep's last."""
    rows = [("a", 1, 116.0, 10.0, 105.0, 11), ("a", 2, 127.0, 10.0, None, None),
            ("b", 1, 139.0, 10.0, 128.0, 11),
            ("c", 1, 120.0, 12.0, 107.0, 12), ("c", 2, 150.0, 29.0, None, None)]
    history = pd.DataFrame([
        {"trial_id": t, "epoch": e, "finished_at": end, "epoch_time_s": s,
         "startup_started_at": began, "startup_worker_pid": pid}
        for t, e, end, s, began, pid in rows])
    spent = slot_time(history, started_at=100.0, ended_at=160.0, slots=2)
    assert spent == pytest.approx({
        "before": 5.0 + 7.0,       # to a's start, to c's start
        "setup": 1.0 + 1.0 + 1.0,  # a 105->106, b 128->129, c 107->108
        "reports": 1.0 + 1.0,      # a 116->117, c 120->121
        "between": 1.0,            # a's end 127 -> b's start 128
        "last_wave": 11.0,         # worker 11 idle from 139 to the last epoch's end, 150
        "after": 2 * 10.0,         # both slots from 150 to the driver's end, 160
    })
    epochs = history["epoch_time_s"].sum()
    assert sum(spent.values()) + epochs == pytest.approx((160.0 - 100.0) * 2)
    # another number of workers than slots, or an older history: no breakdown
    assert all(math.isnan(v) for v in slot_time(history, 100.0, 160.0, slots=3).values())
    old = history.drop(columns="finished_at")
    assert all(math.isnan(v) for v in slot_time(old, 100.0, 160.0, slots=2).values())
