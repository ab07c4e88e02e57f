"""One experiment, one writer: the lock a driver holds on its experiment folder while it runs.

The lock is an exclusive ``flock`` on ``<experiment>/driver.lock``, a file that names its
holder (``pid``, ``host``, ``started``) while held and is emptied on release. The kernel drops
the lock when its process dies, so a driver that was killed leaves a stale lock: a file that
still names it but that nobody holds; the next driver takes it over and says so in one line.
A second driver on a held folder is refused with a line naming the holder.

Only local folders are locked: object stores (``s3://``, ``gs://``) have no locks, so a sweep
on a storage URI runs without one (one writer per experiment is then up to the user).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..errors import ForestSegError

LOCK_FILE = "driver.lock"


class ExperimentLocked(ForestSegError):
    """The experiment folder is held by another live driver."""


def _describe(holder: str) -> str:
    try:
        fields = json.loads(holder)
        return (f"driver pid {fields['pid']} on host {fields['host']} "
                f"(started {fields['started']})")
    except (ValueError, TypeError, KeyError):
        return f"driver {holder.strip()!r}"


def acquire(experiment: Path) -> IO[str]:
    """Lock the local folder ``experiment`` (created if missing) for this process; returns
    the open lock file to :func:`release`. ExperimentLocked naming the holder when another
    live driver has it."""
    path = experiment / LOCK_FILE
    try:
        experiment.mkdir(parents=True, exist_ok=True)
        stream = open(path, "a+")  # held open (and locked) until release()
    except OSError as exc:
        raise ForestSegError(f"cannot create the experiment lock {path} ({exc.strerror}): "
                             "pass a writable --storage-path") from None
    try:
        fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text()
        stream.close()
        raise ExperimentLocked(f"experiment {experiment} is in use by the {_describe(holder)}; "
                               "wait for it to end, or pick another --name") from None
    stream.seek(0)
    previous = stream.read()
    if previous.strip():
        print(f"taking over the stale lock {path} of the {_describe(previous)}, which is no "
              "longer running", file=sys.stderr, flush=True)
    stream.seek(0)
    stream.truncate()
    json.dump({"pid": os.getpid(), "host": socket.gethostname(),
               "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, stream)
    stream.flush()
    return stream


def release(stream: IO[str]) -> None:
    """Empty the lock file (a free lock) and unlock it."""
    stream.seek(0)
    stream.truncate()
    stream.close()


@contextmanager
def experiment_lock(experiment_path: str) -> Iterator[None]:
    """Hold the lock of ``experiment_path`` for the block (nothing for a storage URI)."""
    if "://" in experiment_path:
        yield
        return
    stream = acquire(Path(experiment_path))
    try:
        yield
    finally:
        release(stream)
