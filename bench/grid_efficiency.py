"""Sweep efficiency of the default grid (``python sweeps/grid.py``): how much of the trial
slots' time goes into training epochs rather than starting trials and saving checkpoints.

``sweep efficiency = sum of the trials' epoch times / (driver wall time x concurrent slots)``,
the epoch times from history.csv's ``epoch_time_s``, the wall time of the whole driver (Ray
start-up included). The start-up parts come from each trial's first report
(``startup_*``, :mod:`forest_seg.startup`), the checkpoint cost from ``checkpoint_s``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .report import median, ratio
from .runs import DriverRun, run_grid

STARTUP_PARTS = ("process", "imports", "idle", "data", "points", "baselines", "model")


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
