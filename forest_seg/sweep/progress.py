"""What a running sweep prints: a line per finished trial, compact progress with the best score
and an ETA, and each trial warning once; plus trial names that say what a trial is.

Ray Tune's own tables (a config box per trial, a status table that shows the first reported
metrics) are off by default; ``Launch(verbose=2)`` (``--verbose``) brings them back.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ray import tune

from ..results import TRIAL_WARNINGS
from .study import METRIC

PROGRESS_EVERY_S = 30.0  # a progress line at least this often while trials run
# short forms of the swept fields in trial names: p50_lr1e-04_s0
SHORT = {"points": "p", "lr": "lr", "seed": "s", "encoder_stages": "e",
         "max_train_tiles": "t", "budget_hours": "h", "point_strategy": "", "head": ""}


@contextmanager
def ray_console(verbose: int) -> Iterator[None]:
    """For the block, Ray Tune's own console output at ``verbose`` 0: none (its legacy reporter
    at verbosity 0 prints nothing, while its newer one prints an experiment box whatever the
    verbosity), and its INFO lines quieted; ``verbose >= 1`` leaves Ray as it is."""
    if verbose >= 1:
        yield
        return
    tune_log = logging.getLogger("ray.tune")
    saved_env, saved_level = os.environ.get("RAY_AIR_NEW_OUTPUT"), tune_log.level
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    tune_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        tune_log.setLevel(saved_level)
        if saved_env is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved_env


def _short_value(value: Any) -> str:
    if isinstance(value, float):
        tiny_or_huge = value and (abs(value) < 1e-2 or abs(value) >= 1e4)
        return f"{value:.0e}" if tiny_or_huge else f"{value:g}"
    return str(value)


def config_words(config: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``points=50 lr=1e-04 seed=0``: the ``keys`` of ``config`` in words."""
    return " ".join(f"{k}={_short_value(config[k])}" for k in keys if k in config)


def config_tag(config: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``p50_lr1e-04_s0``: the ``keys`` of ``config`` as a short file-name-safe tag."""
    parts = [f"{SHORT.get(k, k + '=')}{_short_value(config[k])}" for k in keys if k in config]
    return "_".join(parts).replace("/", "-").replace(" ", "") or "trial"


class TrialName:
    """Ray Tune's ``trial_name_creator``/``trial_dirname_creator``: ``<tag>_<trial id>``, e.g.
    ``p50_lr1e-04_s0_a1b2c_00003`` (picklable, for a resumed experiment)."""

    def __init__(self, keys: Sequence[str]):
        self.keys = tuple(keys)

    def __call__(self, trial) -> str:
        return f"{config_tag(trial.config, self.keys)}_{trial.trial_id}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress(tune.Callback):
    """Prints, for a sweep of ``total`` trials of ``epochs`` epochs each whose configurations
    differ in ``keys``: a line per finished trial, a progress line after it (and at least
    every ``every_s`` seconds while trials run) with trials done/running/pending, the best
    ``val_miou`` so far and its configuration, elapsed time and an ETA from the measured pace
    of trial-epochs, and every distinct trial warning once."""

    def __init__(self, total: int, epochs: int, keys: Sequence[str],
                 every_s: float = PROGRESS_EVERY_S, clock=time.monotonic, out=print):
        self.total, self.epochs, self.keys = total, epochs, tuple(keys)
        self.every_s, self.clock, self.out = every_s, clock, out
        self._start = self._last = clock()
        self._epochs_done: dict[str, int] = {}
        self._finished: set[str] = set()
        self._best: tuple[float, str] | None = None
        self._warned: set[str] = set()

    def __getstate__(self) -> dict:  # Ray pickles callbacks with the experiment
        return {"total": self.total, "epochs": self.epochs, "keys": self.keys,
                "every_s": self.every_s}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._epochs_done[trial.trial_id] = int(result.get("epoch", 0))
        score = result.get(METRIC)
        if isinstance(score, (int, float)) and math.isfinite(score) and (
                self._best is None or score > self._best[0]):
            self._best = (float(score), config_words(trial.config, self.keys))
        for text in result.get(TRIAL_WARNINGS) or []:
            if text not in self._warned:
                self._warned.add(text)
                self.out(f"warning from trial {config_words(trial.config, self.keys)}: {text}",
                         flush=True)

    def on_step(self, iteration, trials, **info) -> None:
        if self.clock() - self._last >= self.every_s and any(
                t.status == "RUNNING" for t in trials):
            self.out(self.progress_line(trials), flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finish(trials, trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trials, trial, "ERROR")

    def _finish(self, trials, trial, how: str) -> None:
        if trial.trial_id in self._finished:
            return
        self._finished.add(trial.trial_id)
        last = trial.last_result or {}
        epochs = int(last.get("epoch", 0))
        if how == "ERROR":
            state = "ERROR"
        elif last.get("diverged"):
            state = "DIVERGED"
        elif epochs < int(trial.config.get("epochs", self.epochs)):
            state = "EARLY_STOPPED"
        else:
            state = "COMPLETED"
        score = last.get(METRIC)
        shown = f"{score:.4f}" if isinstance(score, (int, float)) and math.isfinite(score) \
            else "n/a"
        self.out(f"trial {len(self._finished)}/{self.total} "
                 f"{config_words(trial.config, self.keys)}: {state}, {epochs} epoch(s), "
                 f"final {METRIC} {shown}", flush=True)
        self.out(self.progress_line(trials), flush=True)

    def progress_line(self, trials: Iterable) -> str:
        """``[3 done, 2 running, 16 pending] best val_miou 0.6120 (points=50 ...) | elapsed
        1m32s, ETA ~4m10s``. The ETA is the trial-epochs left at the sweep's measured pace
        (trial-epochs reported per second of wall time so far, start-up included); early
        stopping makes the real remainder shorter."""
        trials = list(trials)
        self._last = self.clock()
        done = len(self._finished | {t.trial_id for t in trials
                                     if t.status in ("TERMINATED", "ERROR")})
        running = sum(t.status == "RUNNING" and t.trial_id not in self._finished
                      for t in trials)
        pending = max(self.total - done - running, 0)
        best = (f"best {METRIC} {self._best[0]:.4f} ({self._best[1]})" if self._best
                else f"no {METRIC} yet")
        elapsed = self.clock() - self._start
        return (f"[{done} done, {running} running, {pending} pending] {best} | elapsed "
                f"{_duration(elapsed)}{self._eta(trials)}")

    def _eta(self, trials: list) -> str:
        reported = sum(self._epochs_done.values())
        if reported == 0:
            return ""
        left = sum(max(int(t.config.get("epochs", self.epochs))
                       - self._epochs_done.get(t.trial_id, 0), 0)
                   for t in trials if t.trial_id not in self._finished
                   and t.status in ("RUNNING", "PENDING", "PAUSED"))
        left += max(self.total - len(trials), 0) * self.epochs
        seconds_per_epoch = (self.clock() - self._start) / reported
        return f", ETA ~{_duration(left * seconds_per_epoch)}"
