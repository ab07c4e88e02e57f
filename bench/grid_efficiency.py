"""Sweep efficiency of the default grid (``python sweeps/grid.py``): how much of the trial
slots' time goes into training epochs rather than starting trials and saving checkpoints.

``sweep efficiency = sum of the trials' epoch times / (driver wall time x concurrent slots)``,
the epoch times from history.csv's ``epoch_time_s``, the wall time of the whole driver (Ray
start-up included). The start-up parts come from each trial's first report
(``startup_*``, :mod:`forest_seg.startup`), the checkpoint cost from ``checkpoint_s``, and
where the rest of the slots' time went (:func:`slot_time`) from each epoch's end
(``finished_at``) and each trial's start (``startup_started_at``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .report import median, ratio
from .runs import DriverRun, run_grid

STARTUP_PARTS = ("process", "imports", "idle", "data", "points", "baselines", "model")
# where a slot's time goes besides epochs (slot_time), in the order of a sweep: key -> label
SLOT_PARTS = {"before": "before the first trial", "setup": "trial set-up",
              "reports": "between epochs", "between": "between trials",
              "last_wave": "last wave", "after": "after the last epoch"}


def efficiency_flags(seeds: int | None) -> list[str]:
    """The grid's flags: none (the default study, 3 seeds) or a copy scaled to ``seeds``."""
    return [] if seeds is None else ["--seeds", str(seeds)]


def run_default_grid(storage: Path, seeds: int | None, timeout_s: float) -> DriverRun:
    """``python sweeps/grid.py`` (CPU preset, embedded synthetic data) as a user runs it."""
    return run_grid(storage, "grid-efficiency", efficiency_flags(seeds), timeout_s)


def slots_from_log(log_text: str, cpus: int, trials: int) -> int:
    """Trials the driver could run at once: ``cpus // CPUs per trial`` (the per-trial
    resources its first line prints, ``"resources": {"cpu": ...}``), at most ``trials``.
    Raises ValueError when the log has no such line."""
    for line in log_text.splitlines():
        head, _, rest = line.partition(": ")
        if head.isidentifier() and rest.startswith("{"):
            try:
                per_trial = json.loads(rest)["resources"]["cpu"]
            except (ValueError, KeyError, TypeError):
                continue
            return max(1, min(trials, int(cpus // max(per_trial, 1e-9))))
    raise ValueError("the driver's log has no line with its per-trial resources")


def efficiency_summary(history: pd.DataFrame, wall_s: float, slots: int) -> dict:
    """The figures of one sweep from its history.csv frame (module docstring).

    ``efficiency``; ``epoch_s`` (sum of epoch times); ``trials``, ``trial_epochs``,
    ``workers`` (distinct worker processes); per start-up part the median seconds over the
    trials that started a fresh worker (``fresh_<part>``) and over those that reused one
    (``reused_<part>``, NaN when none did); ``warmup_s``: the median over trials of the first
    epoch's time beyond the median of the trial's later epochs; ``tiles_decoded`` by trials;
    ``checkpoints`` written, ``checkpoint_s`` their total and ``checkpoint_per_epoch_s``.
    Columns a trial did not report (an older version) give NaN.
    """
    epoch_s = float(history["epoch_time_s"].sum())
    out = {"efficiency": ratio(epoch_s, wall_s * slots), "epoch_s": epoch_s, "wall_s": wall_s,
           "slots": slots, "trials": int(history["trial_id"].nunique()),
           "trial_epochs": len(history)}
    first = history.sort_values("epoch").groupby("trial_id").head(1)
    has_startup = "startup_worker_trial" in first
    fresh = first[first["startup_worker_trial"] == 1] if has_startup else first.iloc[:0]
    reused = first[first["startup_worker_trial"] > 1] if has_startup else first.iloc[:0]
    for part in STARTUP_PARTS:
        column = f"startup_{part}_s"
        for name, rows in (("fresh", fresh), ("reused", reused)):
            out[f"{name}_{part}"] = median(rows[column]) if column in rows else math.nan
    out["workers"] = (int(first["startup_worker_pid"].nunique()) if has_startup else math.nan)
    out["fresh_trials"], out["reused_trials"] = len(fresh), len(reused)
    out["tiles_decoded"] = (float(fresh["startup_tiles_decoded"].sum()) if has_startup
                            else math.nan)
    out["warmup_s"] = median(_first_epoch_excess(rows) for _, rows in history.groupby("trial_id"))
    if "checkpoint_s" in history:
        saved = history["checkpoint_s"].fillna(0.0)
        out["checkpoints"] = int((saved > 0).sum())
        out["checkpoint_s"] = float(saved.sum())
    else:
        out["checkpoints"], out["checkpoint_s"] = math.nan, math.nan
    out["checkpoint_per_epoch_s"] = ratio(out["checkpoint_s"], len(history))
    return out


def _first_epoch_excess(rows: pd.DataFrame) -> float:
    """A trial's first epoch time minus the median of its later epochs (NaN with one epoch)."""
    times = rows.sort_values("epoch")["epoch_time_s"].tolist()
    return times[0] - median(times[1:]) if len(times) > 1 else math.nan


def slot_time(history: pd.DataFrame, started_at: float, ended_at: float,
              slots: int) -> dict[str, float]:
    """The slot-seconds of a sweep outside its epochs, by :data:`SLOT_PARTS`, from each trial
    worker's timeline (the driver ran from Unix time ``started_at`` to ``ended_at``):

    - ``before``: from the driver's start to the worker's first trial (Ray's start, the
      worker's start and imports, Ray Tune handing it the trial);
    - ``setup``: from a trial's start to its first epoch (data, points, baselines, model);
    - ``reports``: between two epochs of a trial (the report, a checkpoint);
    - ``between``: from a trial's last epoch to the next trial on the worker (its last report
      and checkpoint, Ray Tune ending it and handing over the next);
    - ``last_wave``: from the worker's last epoch to the sweep's last (a last wave of trials
      that fills fewer slots);
    - ``after``: from the sweep's last epoch to the driver's end, once per slot (the last
      report, the closing table, Ray's stop).

    With the epochs they add up to ``(ended_at - started_at) * slots``. All NaN when the
    history lacks ``finished_at`` or ``startup_started_at`` (an older version), or when the
    trials ran on other than ``slots`` worker processes (a worker lost and replaced)."""
    missing = {part: math.nan for part in SLOT_PARTS}
    needed = {"finished_at", "startup_started_at", "startup_worker_pid"}
    if not needed <= set(history.columns):
        return missing
    epochs = history.assign(start=history["finished_at"] - history["epoch_time_s"])
    first = epochs.sort_values("epoch").groupby("trial_id").head(1).set_index("trial_id")
    if first["startup_worker_pid"].nunique() != slots:
        return missing
    last_end = epochs["finished_at"].max()
    out = dict.fromkeys(SLOT_PARTS, 0.0)
    out["after"] = slots * (ended_at - last_end)
    for _, trials in first.groupby("startup_worker_pid"):
        previous_end = None
        for trial_id in trials.sort_values("startup_started_at").index:
            rows = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
            began = float(first.loc[trial_id, "startup_started_at"])
            if previous_end is None:
                out["before"] += began - started_at
            else:
                out["between"] += began - previous_end
            out["setup"] += float(rows["start"].iloc[0]) - began
            out["reports"] += float((rows["start"].iloc[1:].to_numpy()
                                     - rows["finished_at"].iloc[:-1].to_numpy()).sum())
            previous_end = float(rows["finished_at"].iloc[-1])
        out["last_wave"] += last_end - previous_end
    return out
