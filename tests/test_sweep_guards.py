"""The guards a sweep passes before its first trial: one driver per experiment folder
(forest_seg.sweep.lock), no new sweep over an existing experiment, and no resume from a
folder another user owns unless trusted (forest_seg.sweep.trust)."""

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from forest_seg.errors import ConfigError
from forest_seg.sweep import Launch, Study, connect, preset_config, run
from forest_seg.sweep.flags import build_parser, launch_from_args
from forest_seg.sweep.lock import LOCK_FILE, ExperimentLocked, acquire, experiment_lock, release
from forest_seg.sweep.runner import check_new
from forest_seg.sweep.trust import check_owner

HOLD = """
import sys, time
from pathlib import Path
from forest_seg.sweep.lock import acquire
lock = acquire(Path(sys.argv[1]))  # held while the file stays open
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def held_by_another_process(tmp_path):
    """(experiment folder, pid of a live process holding its lock)."""
    experiment = tmp_path / "exp"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(experiment)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield experiment, holder
    finally:
        holder.kill()
        holder.wait()


def test_a_second_driver_is_refused_naming_the_holder(held_by_another_process):
    experiment, holder = held_by_another_process
    with pytest.raises(ExperimentLocked) as refused:
        acquire(experiment)
    message = str(refused.value)
    assert f"experiment {experiment} is in use by the driver pid {holder.pid} on host " \
           f"{socket.gethostname()}" in message
    assert "pick another --name" in message


def test_the_lock_of_a_dead_driver_is_taken_over_with_one_line(held_by_another_process,
                                                              capsys):
    experiment, holder = held_by_another_process
    holder.kill()
    holder.wait()
    stream = acquire(experiment)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"taking over the stale lock {experiment / LOCK_FILE} of the driver "
                          f"pid {holder.pid} ")
    assert json.loads((experiment / LOCK_FILE).read_text())["pid"] == os.getpid()
    release(stream)
    assert (experiment / LOCK_FILE).read_text() == ""  # a free lock: no takeover line next time
    release(acquire(experiment))
    assert capsys.readouterr().err == ""


def test_storage_uris_are_not_locked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with experiment_lock("s3://bucket/runs/exp"):
        assert list(tmp_path.iterdir()) == []


def test_a_new_sweep_over_an_existing_experiment_is_refused(tmp_path):
    check_new(str(tmp_path / "missing"))
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / LOCK_FILE).write_text("")
    check_new(str(tmp_path / "exp"))  # only its (free) lock: never ran
    (tmp_path / "exp" / "optuna.db").write_text("")
    check_new(str(tmp_path / "exp"))  # the study file an Optuna driver prepares first
    (tmp_path / "exp" / "results.csv").write_text("trial_id\n")
    with pytest.raises(ConfigError, match=r"exp exists: pass --resume to continue it, or pick"):
        check_new(str(tmp_path / "exp"))
    check_new("s3://bucket/runs/exp")


def test_resume_refuses_a_folder_another_user_owns(tmp_path, monkeypatch):
    (tmp_path / "tuner.pkl").write_bytes(b"")
    check_owner(str(tmp_path))
    me = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: me + 1)
    with pytest.raises(ConfigError) as refused:
        check_owner(str(tmp_path))
    assert str(refused.value) == (
        f"--resume: {tmp_path} is owned by uid {me}, not by you (uid {me + 1}); resuming "
        "unpickles Ray's experiment state from it, which can run code: pass --trust-storage "
        "if you trust whoever wrote it")
    check_owner("s3://bucket/runs/exp")


def test_trust_storage_flag_reaches_the_launch():
    parser = build_parser("test", "")
    assert launch_from_args(parser.parse_args(["--resume"])).trust_storage is False
    launch = launch_from_args(parser.parse_args(["--resume", "--trust-storage"]))
    assert launch.resume and launch.trust_storage


@pytest.mark.slow
def test_run_applies_the_guards_before_any_trial(tmp_path, monkeypatch,
                                                 held_by_another_process):
    """run(): a held experiment, an existing name without resume, a resume from a folder of
    another user are refused; trust_storage lets the resume through to loading the state
    (here an empty tuner.pkl: refused in one line too)."""
    study = Study(base=preset_config("smoke", epochs=1), trials=[{"points": 10}])
    held, _ = held_by_another_process
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "tuner.pkl").write_bytes(b"")
    me = os.getuid()
    with connect():
        with pytest.raises(ExperimentLocked, match="is in use by the driver pid"):
            run(study, Launch(storage_path=str(held.parent), name=held.name, verbose=0))
        with pytest.raises(ConfigError, match="exists: pass --resume"):
            run(study, Launch(storage_path=str(tmp_path), name="mine", verbose=0))
        monkeypatch.setattr(os, "getuid", lambda: me + 1)
        resume = Launch(storage_path=str(tmp_path), name="mine", resume=True, verbose=0)
        with pytest.raises(ConfigError, match="pass --trust-storage"):
            run(study, resume)
        with pytest.raises(ConfigError, match=r"cannot load the experiment state in .*mine "
                                              r"\(EOFError"):
            run(study, replace(resume, trust_storage=True))
    assert not list(Path(tmp_path).glob("mine/*.csv"))
