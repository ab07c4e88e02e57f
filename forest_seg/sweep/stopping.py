"""Stopping a running sweep cleanly, its experiment left resumable.

A sweep stops early for two reasons: the driver got SIGINT (Ctrl-C) or SIGTERM, or the
results files could not be written (a full disk). Either way :func:`request_stop` records
why and asks Ray Tune for its graceful stop: ``Tuner.fit`` installs a handler on SIGUSR1 that
ends the tuning loop after the current step, snapshots the experiment state one last time and
returns, leaving unfinished trials to ``Tuner.restore``. :func:`stop_on_signals` routes
SIGINT and SIGTERM there (with Ray's own SIGINT handler switched off, so that both signals
take one path and the driver knows which one came), and :func:`forest_seg.sweep.run` raises
:class:`SweepStopped` once ``fit`` has returned.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Ray Tune's environment switch for its SIGINT handler (ray.tune.tune._setup_signal_catching)
_RAY_SIGINT_SWITCH = "TUNE_DISABLE_SIGINT_HANDLER"
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class StopRequest:
    """Why a sweep stopped early: ``reason`` (one line, e.g. ``interrupted``) and the exit
    status its driver ends with (128 + the signal number after a signal)."""

    reason: str
    exit_status: int


class SweepStopped(Exception):
    """:func:`forest_seg.sweep.run` ended before every trial had finished; the experiment at
    ``experiment`` (None: stopped before it was created) resumes with ``Launch(resume=True)``."""

    def __init__(self, request: StopRequest, experiment: str | None = None):
        super().__init__(request.reason)
        self.request = request
        self.experiment = experiment


_requests: list[StopRequest] = []  # this process's stop requests for the running sweep
_previous_handlers: dict[int, object] = {}  # SIGINT/SIGTERM handlers before stop_on_signals


def stop_requested() -> StopRequest | None:
    """The first stop request since the running sweep started, or None."""
    return _requests[0] if _requests else None


def request_stop(request: StopRequest) -> None:
    """Record ``request`` (the first one counts) and start Ray Tune's graceful stop.

    Inside ``Tuner.fit`` this calls Ray's SIGUSR1 handler: the tuning loop ends after the
    current step. Outside it (Ray starting, the experiment being built) there is nothing to
    stop gracefully, so :class:`SweepStopped` is raised at once.
    """
    _requests.append(request)
    ray_stop = signal.getsignal(signal.SIGUSR1)
    if not callable(ray_stop):
        raise SweepStopped(_requests[0])
    ray_stop(signal.SIGUSR1, None)


def _on_signal(signum: int, frame) -> None:
    # a second signal of the same kind is not caught: a second Ctrl-C stops at once
    signal.signal(signum, _previous_handlers.get(signum, signal.SIG_DFL))
    request_stop(StopRequest("interrupted", 128 + signum))


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """For the block, SIGINT and SIGTERM stop the sweep gracefully (:func:`request_stop`)
    and earlier stop requests are forgotten; the handlers before it are restored after it.

    Signal handlers can only be set from the main thread: elsewhere (a notebook running
    ``run`` in a thread) the signals keep their handlers and only :func:`request_stop`
    stops a sweep.
    """
    _requests.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    switch = os.environ.get(_RAY_SIGINT_SWITCH)
    os.environ[_RAY_SIGINT_SWITCH] = "1"
    previous_usr1 = signal.getsignal(signal.SIGUSR1)
    _previous_handlers.update({s: signal.signal(s, _on_signal) for s in _SIGNALS})
    try:
        yield
    finally:
        for signum in _SIGNALS:
            signal.signal(signum, _previous_handlers.pop(signum))
        signal.signal(signal.SIGUSR1, previous_usr1)
        if switch is None:
            os.environ.pop(_RAY_SIGINT_SWITCH, None)
        else:
            os.environ[_RAY_SIGINT_SWITCH] = switch
