"""A failed trial's reason in one line, and no retry of a failure that cannot change.

Ray Tune retries a failed trial up to ``FailureConfig(max_failures)`` times, whatever failed: it
has no per-exception filter. A bad input (:class:`~forest_seg.errors.ForestSegError`: a config
value, a dataset, a checkpoint) fails the same way each time, so retrying it only multiplies
the time to the error. :class:`TrialFailures` ends such a trial at its first failure; a worker
that died, or any other exception (a RuntimeError such as CUDA out of memory), is still retried
from the trial's last checkpoint. It also keeps each failure's one-line reason for results.csv
(:func:`trial_error_line`), taken from the exception itself rather than from Ray's files.

How: Ray decides in ``TuneController._process_trial_failure``, by ``trial.should_recover()``
right after ``trial.handle_error(exc)`` has counted the failure, and no callback runs between
the two (``on_trial_recover`` comes after the trial is requeued). So when a trial starts, the
callback makes it a :class:`_FailureAwareTrial`, Ray's ``Trial`` with those two methods
extended. The subclass adds no persisted state (what it keeps lives in ``temporary_state``,
which Ray never saves), and a resumed experiment's trials are plain ``Trial`` objects that the
callback converts again when they start. tests/test_sweep_api.py checks it against the
installed Ray.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray import tune
from ray.exceptions import RayTaskError
from ray.tune.experiment import Trial

from ..errors import ForestSegError
from ..results import last_error_line


def failure_cause(exc: BaseException | None) -> BaseException | None:
    """The exception a trial's code raised, from the one Ray reports (a ``RayTaskError`` wraps
    it; a ``RayActorError``, a dead worker, is its own cause)."""
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        return exc.cause
    return exc


def is_input_error(exc: BaseException | None) -> bool:
    """Whether a trial's failure is a bad input (a :class:`ForestSegError`), which a retry
    cannot change."""
    return isinstance(failure_cause(exc), ForestSegError)


def error_line(exc: BaseException | None) -> str | None:
    """``"<ExceptionClass>: <first line of its message>"`` for a trial's failure; None for
    none."""
    cause = failure_cause(exc)
    if cause is None:
        return None
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return type(cause).__name__ + (f": {lines[0]}" if lines else "")


def trial_error_line(trial: Any) -> str | None:
    """The one-line reason of a failed Ray Tune trial: the one :class:`TrialFailures` kept
    from the exception itself, else the last line of the traceback Ray wrote to the trial's
    ``error.txt`` on the driver (a trial of an experiment started without that callback);
    None when there is neither."""
    reason = getattr(trial.temporary_state, "error_line", None)
    if reason:
        return reason
    text = trial.error_file
    if not text or not os.path.isfile(text):
        return None
    return last_error_line(Path(text).read_text(errors="replace"))


class _FailureAwareTrial(Trial):
    """Ray's Trial that keeps its last failure's reason and does not recover from a bad
    input (see the module doc)."""

    def handle_error(self, exc=None):
        super().handle_error(exc)
        self.temporary_state.error_line = error_line(exc)
        self.temporary_state.input_error = is_input_error(exc)

    def should_recover(self) -> bool:
        if getattr(self.temporary_state, "input_error", False):
            return False
        return super().should_recover()


class TrialFailures(tune.Callback):
    """Makes every trial keep its failures' one-line reason (:func:`trial_error_line`) and
    end at its first failure when that is a bad input (:func:`is_input_error`); other
    failures keep Ray's ``max_failures`` retries."""

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if type(trial) is Trial:
            trial.__class__ = _FailureAwareTrial
