"""A failed trial's reason in one line, and no retry of a failure that cannot change.

Ray Tune retries a failed trial up to ``FailureConfig(max_failures)`` times, whatever failed: it
has no per-exception filter. A bad input (:class:`~forest_seg.errors.ForestSegError`: a config
value, a dataset, a checkpoint) fails the same way each time, so retrying it only multiplies
the time to the error. :class:`InputErrorsFailOnce` ends such a trial at its first failure; a
worker that died, or any other exception (a RuntimeError such as CUDA out of memory), is still
retried from the trial's last checkpoint.

How: Ray decides in ``TuneController._process_trial_failure``, by ``trial.should_recover()``
right after ``trial.handle_error(exc)`` has counted the failure, and no callback runs between
the two (``on_trial_recover`` comes after the trial is requeued). So when a trial starts, the
callback makes it a :class:`_InputErrorAwareTrial`, Ray's ``Trial`` with those two methods
extended. The subclass adds no persisted state (its flag lives in ``temporary_state``, which
Ray never saves), and a resumed experiment's trials are plain ``Trial`` objects that the
callback converts again when they start. tests/test_sweep_api.py checks it against the
installed Ray.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray import cloudpickle, tune
from ray.exceptions import RayTaskError
from ray.tune.experiment import Trial

from ..errors import ForestSegError


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
    """The one-line reason of a failed Ray Tune trial, from the error files Ray has just
    written in the trial's folder on the driver (``error.pkl``, the exception; else the last
    line of ``error.txt``, its traceback); None when there are none."""
    pickled, text = trial.pickled_error_file, trial.error_file
    if pickled and os.path.isfile(pickled):
        try:
            with open(pickled, "rb") as stream:
                return error_line(cloudpickle.load(stream))
        except Exception:  # an exception class that no longer unpickles: use the text
            pass
    if text and os.path.isfile(text):
        lines = [line.strip() for line in Path(text).read_text(errors="replace").splitlines()
                 if line.strip()]
        return lines[-1] if lines else None
    return None


class _InputErrorAwareTrial(Trial):
    """Ray's Trial whose failure from a bad input is not recovered (see the module doc)."""

    def handle_error(self, exc=None):
        super().handle_error(exc)
        self.temporary_state.input_error = is_input_error(exc)

    def should_recover(self) -> bool:
        if getattr(self.temporary_state, "input_error", False):
            return False
        return super().should_recover()


class InputErrorsFailOnce(tune.Callback):
    """Ends a trial at its first failure when that failure is a bad input
    (:func:`is_input_error`); other failures keep Ray's ``max_failures`` retries."""

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if type(trial) is Trial:
            trial.__class__ = _InputErrorAwareTrial
