"""A sweep driver under interruption and faults: SIGINT/SIGTERM inside the window between a
trial's checkpoint and its recorded result, a results file that cannot be written, trials
that all fail; each compared, after ``--resume``, with an uninterrupted run of the same trials.

The faults are injected into a real driver process (``sweeps/grid.py``) by :data:`HOOKED`, a
wrapper that patches the results writer before running the driver's ``__main__``."""

import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
# two trials (points 10 and 50), three epochs each, every trial runs all of them (FIFO)
TRIALS = ["--smoke-test", "--epochs", "3", "--points", "10", "50", "--lrs", "1e-3",
          "--base-lr", "1e-3", "--no-dense", "--seeds", "1", "--scheduler", "fifo"]
KEY = ["points", "lr", "seed"]  # a trial across experiments (trial ids differ)
RESULT_COLUMNS = ["status", "epochs", "best_epoch", "val_miou", "val_iou", "val_loss",
                  "best_val_miou"]
HISTORY_COLUMNS = ["train_loss", "val_loss", "val_miou", "val_iou", "lr"]

HOOKED = r"""
import errno, runpy, sys, time
from pathlib import Path

from forest_seg.checkpoint import load_checkpoint
from forest_seg.errors import CheckpointError
from forest_seg.sweep import callbacks, stopping

hook, arg, marker = sys.argv[1:4]
sys.argv = ["sweeps/grid.py", *sys.argv[4:]]


def checkpoint_epochs(folder):
    epochs = set()
    for path in Path(folder).glob("checkpoint_*/checkpoint.pt"):
        try:
            epochs.add(load_checkpoint(path)["epoch"])
        except (OSError, CheckpointError, RuntimeError, EOFError):
            pass  # still being copied into place
    return epochs


if hook == "hold":
    # Hold the driver once it has sent the points=10 trial off to train epoch N (epoch N-1
    # recorded, its checkpoint saved), until epoch N is checkpointed in the trial's folder
    # (its result then waits for the driver) and a stop signal has been handled.
    held = []
    epoch = int(arg)

    def on_step_end(self, iteration, trials, **info):
        trial = next((t for t in trials if t.config["points"] == 10), None)
        if held or trial is None or trial.is_saving or (
                trial.trial_id, epoch - 1) not in self._epochs:
            return
        held.append(trial.trial_id)
        while epoch not in checkpoint_epochs(trial.path):
            time.sleep(0.05)
        assert (trial.trial_id, epoch) not in self._epochs
        Path(marker).write_text(trial.trial_id)
        while stopping.stop_requested() is None:
            time.sleep(0.05)

    callbacks.ResultsFiles.on_step_end = on_step_end
elif hook == "full-disk":
    # results.csv cannot be written: the first trial to finish is not recorded
    write = callbacks.write_csv

    def full_disk(path, name, frame):
        if name == arg:
            raise OSError(errno.ENOSPC, "No space left on device", f"{path}/{name}")
        write(path, name, frame)

    callbacks.write_csv = full_disk
runpy.run_path("sweeps/grid.py", run_name="__main__")
"""


def environment() -> dict[str, str]:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return env


def grid(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "sweeps/grid.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=environment())


def hooked(hook: str, arg: str, marker: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOOKED, hook, arg, str(marker),
                             *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment())


def resume(stderr: str) -> subprocess.CompletedProcess:
    """Run the resume command the stopped driver printed as its last line."""
    command = shlex.split(stderr.strip().splitlines()[-1].split("resume with ", 1)[1])
    assert command[:2] == ["python", "sweeps/grid.py"]
    assert command[-3:-1] == ["--resume", "--name"]
    return subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=environment())


def tables(experiment: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """results.csv and history.csv keyed by trial config (and epoch), deterministic columns."""
    results = pd.read_csv(experiment / "results.csv")
    assert results["trial_id"].is_unique
    trials = results.set_index("trial_id")[KEY].rename(columns=lambda key: f"trial_{key}")
    history = pd.read_csv(experiment / "history.csv").join(trials, on="trial_id")
    return (results.set_index(KEY)[RESULT_COLUMNS].sort_index(),
            history.set_index([*trials.columns, "epoch"])[HISTORY_COLUMNS].sort_index())


def assert_same_tables(experiment: Path, reference: Path) -> None:
    results, history = tables(experiment)
    expected_results, expected_history = tables(reference)
    assert results.index.tolist() == expected_results.index.tolist()
    assert history.index.tolist() == expected_history.index.tolist()  # every epoch, once
    pd.testing.assert_frame_equal(results, expected_results, rtol=1e-5)
    pd.testing.assert_frame_equal(history, expected_history, rtol=1e-5)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The experiment of the same trials run without interruption."""
    storage = tmp_path_factory.mktemp("uninterrupted")
    done = grid(*TRIALS, "--storage-path", storage, "--name", "whole")
    assert done.returncode == 0, done.stderr[-3000:]
    results = pd.read_csv(storage / "whole" / "results.csv")
    assert set(results["status"]) == {"COMPLETED"} and (results["epochs"] == 3).all()
    return storage / "whole"


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "epoch"), [(signal.SIGINT, 2), (signal.SIGTERM, 3)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_between_checkpoint_and_result_loses_no_epoch(tmp_path, uninterrupted,
                                                               signum, epoch):
    """The driver is signalled after the points=10 trial checkpointed epoch ``epoch`` but
    before the driver got that epoch's result (epoch 3: the trial's last): it stops with
    128 + signal and the resume line, and the resumed experiment equals the uninterrupted one."""
    marker = tmp_path / "held"
    driver = hooked("hold", str(epoch), marker, *TRIALS, "--storage-path", tmp_path,
                    "--name", "cut")
    deadline = time.monotonic() + 500
    while not marker.exists() and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if not marker.exists():
        driver.kill()
        pytest.fail("the driver never reached the hold: " + driver.communicate()[1][-3000:])
    driver.send_signal(signum)
    _, stderr = driver.communicate(timeout=300)

    assert driver.returncode == 128 + signum, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith(
        "interrupted: resume with python sweeps/grid.py --smoke-test")
    assert "Traceback" not in stderr and "Fatal Python error" not in stderr
    held = marker.read_text()
    history = pd.read_csv(tmp_path / "cut" / "history.csv")
    recorded = history.loc[history["trial_id"] == held, "epoch"].tolist()
    assert recorded == list(range(1, epoch))  # the window: epoch N checkpointed, not recorded

    done = resume(stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_tables(tmp_path / "cut", uninterrupted)


@pytest.mark.slow
def test_a_full_disk_stops_the_sweep_and_resume_loses_nothing(tmp_path, uninterrupted):
    """results.csv cannot be written when the first trial finishes: one line, exit 1, the
    other trial left to resume; after ``--resume`` both trials are recorded as uninterrupted."""
    driver = hooked("full-disk", "results.csv", tmp_path / "unused", *TRIALS,
                    "--storage-path", tmp_path, "--name", "full")
    _, stderr = driver.communicate(timeout=600)

    assert driver.returncode == 1, stderr[-3000:]
    assert stderr.count("No space left on device") == 1
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"could not write {tmp_path / 'full' / 'results.csv'}")
    assert not (tmp_path / "full" / "results.csv").exists()

    done = resume(stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_tables(tmp_path / "full", uninterrupted)


@pytest.mark.slow
def test_a_sweep_whose_trials_error_exits_1_and_lists_them(tmp_path):
    """One trial whose device does not exist here (--device cuda on a CPU-only machine)."""
    done = grid("--smoke-test", "--points", 10, "--base-points", 10, "--lrs", 1e-3,
                "--base-lr", 1e-3, "--no-dense", "--seeds", 1, "--device", "cuda",
                "--max-failures", 0,
                "--storage-path", tmp_path, "--name", "broken", timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    results = pd.read_csv(tmp_path / "broken" / "results.csv")
    assert results["status"].tolist() == ["ERROR"]
    lines = done.stderr.splitlines()
    listed = lines[lines.index("error: 1 of 1 trials failed:") + 1]
    trial = results.loc[0, "trial_id"]
    assert listed.startswith(f"  {trial} (points=10 point_strategy=balanced lr=0.001 seed=0) "
                             "ERROR")
    assert math.isnan(results.loc[0, "val_miou"])
