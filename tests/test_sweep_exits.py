"""How a sweep driver ends (forest_seg.sweep.exits) and how it stops early
(forest_seg.sweep.stopping): exit statuses, the trials listed as failed, the resume command,
and SIGINT/SIGTERM routed to Ray Tune's graceful stop."""

import gc
import os
import signal

import pandas as pd
import pytest

from forest_seg.errors import ConfigError
from forest_seg.sweep.exits import failed_trials, finish, resume_command, sweep_cli
from forest_seg.sweep.stopping import (
    StopRequest,
    SweepStopped,
    request_stop,
    stop_on_signals,
    stop_requested,
)


@pytest.fixture(autouse=True)
def unfreeze():
    """sweep_cli freezes the objects of the process it ends (a driver's): give them back to
    the garbage collector of this test process."""
    yield
    gc.unfreeze()


def frame(statuses, errors=None, experiment="/runs/x") -> pd.DataFrame:
    """A results frame as run() returns it; written to ``experiment`` when that exists."""
    rows = pd.DataFrame({"trial_id": [f"t{i}" for i in range(len(statuses))],
                         "points": 10, "point_strategy": "balanced", "lr": 1e-3, "seed": 0,
                         "status": statuses, "val_miou": 0.5, "val_iou": 0.5,
                         "best_val_miou": 0.5, "epochs": 2})
    if errors is not None:
        rows["error"] = errors
    rows.attrs["experiment"] = str(experiment)
    if os.path.isdir(experiment):
        rows.to_csv(f"{experiment}/results.csv", index=False)
    return rows


def test_finished_statuses_exit_0(tmp_path, capsys):
    assert finish(frame(["COMPLETED", "EARLY_STOPPED", "DIVERGED"], experiment=tmp_path)) == 0
    out, err = capsys.readouterr()
    assert f"{tmp_path}/results.csv" in out and err == ""


def test_error_trials_exit_1_and_are_listed_with_config_and_message(tmp_path, capsys):
    results = frame(["COMPLETED", "ERROR", "ERROR"], errors=[None, "CUDA missing", None],
                    experiment=tmp_path)
    assert finish(results) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: 2 of 3 trials failed:",
        "  t1 (points=10 point_strategy=balanced lr=0.001 seed=0) ERROR: CUDA missing",
        "  t2 (points=10 point_strategy=balanced lr=0.001 seed=0) ERROR",
    ]


def test_results_without_an_error_column_still_list_the_failed_trial():
    assert failed_trials(frame(["ERROR"])) == [
        "  t0 (points=10 point_strategy=balanced lr=0.001 seed=0) ERROR"]
    assert failed_trials(pd.DataFrame()) == []


def test_resume_command_replaces_resume_and_name():
    argv = ["sweeps/grid.py", "--smoke-test", "--name", "old", "--resume", "--points", "10"]
    assert resume_command(argv, "new") == (
        "python sweeps/grid.py --smoke-test --points 10 --resume --name new")
    assert resume_command(["sweeps/pbt.py", "--name=a b"], "a b") == (
        "python sweeps/pbt.py --resume --name 'a b'")


def test_a_stopped_sweep_prints_how_to_resume_and_exits_with_its_status(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["sweeps/grid.py", "--seeds", "2"])

    def stopped():
        raise SweepStopped(StopRequest("interrupted", 143), "/runs/grid-1")

    assert sweep_cli(stopped) == 143
    assert capsys.readouterr().err == (
        "interrupted: resume with python sweeps/grid.py --seeds 2 --resume --name grid-1\n")

    def bad_input():
        raise ConfigError("invalid --seeds 0")

    assert sweep_cli(bad_input) == 2
    assert capsys.readouterr().err == "error: invalid --seeds 0\n"


def test_a_driver_exits_without_its_objects_in_the_garbage_collector():
    """Python's collection on exit walks every tracked object; sweep_cli freezes the
    driver's first, whatever way it ends."""
    gc.unfreeze()
    assert sweep_cli(lambda: 0) == 0
    assert gc.get_freeze_count() > 0
    gc.unfreeze()

    def bad_input():
        raise ConfigError("invalid --seeds 0")

    assert sweep_cli(bad_input) == 2
    assert gc.get_freeze_count() > 0


def test_a_stop_outside_rays_fit_raises_at_once():
    with stop_on_signals(), pytest.raises(SweepStopped) as stopped:
        request_stop(StopRequest("interrupted", 130))
    assert stopped.value.request == StopRequest("interrupted", 130)
    assert stopped.value.experiment is None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_reach_rays_graceful_stop_once_and_handlers_come_back(signum):
    """Inside the block a signal calls the SIGUSR1 handler (Ray's graceful stop, installed by
    Tuner.fit; here a stand-in) and is recorded; a second one of the same kind is not caught;
    after the block every handler and Ray's SIGINT switch are as before."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    switch = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    ray_stops = []
    with stop_on_signals():
        assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # one path for both signals
        signal.signal(signal.SIGUSR1, lambda *args: ray_stops.append(args[0]))
        signal.raise_signal(signum)
        assert ray_stops == [signal.SIGUSR1]
        assert stop_requested() == StopRequest("interrupted", 128 + signum)
        assert signal.getsignal(signum) == before[signum]
    assert {s: signal.getsignal(s) for s in before} == before
    assert os.environ.get("TUNE_DISABLE_SIGINT_HANDLER") == switch


def test_a_new_sweep_forgets_the_last_ones_stop():
    with stop_on_signals(), pytest.raises(SweepStopped):
        request_stop(StopRequest("interrupted", 130))
    with stop_on_signals():
        assert stop_requested() is None
