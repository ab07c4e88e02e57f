"""Per-configuration summaries whose means never mix epoch counts.

Conventions (see also :mod:`~forest_seg.analysis.stats`):

- A configuration is the values of the varying config columns, ``seed`` excluded.
- Its headline numbers (mean, sd, 95% t-interval of each metric) rest on its COMPLETED trials
  only, which all ran the same (the planned) number of epochs: ``at_epoch``. EARLY_STOPPED,
  DIVERGED and ERROR trials are counted in ``n_early_stopped``, ``n_diverged``, ``n_error``.
- An ASHA run stops trials at different epochs. Given the per-epoch history and some
  EARLY_STOPPED trials, the summary also reports every configuration at the *common epoch*:
  the highest epoch that every COMPLETED or EARLY_STOPPED trial of the summarised
  configurations reached, each trial's metric read from its history at that epoch.
- Baselines: the mean and interval of every ``baseline_*`` column over the same headline
  seeds, and ``gain_over_colour``, the mean and interval of the paired per-seed difference
  ``metric - baseline_colour_miou`` (the network against a colour lookup table built from the
  same labels).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from forest_seg.analysis.cost import COST_COLUMNS, CostModel, with_label_costs
from forest_seg.analysis.load import config_label, trial_keys, varying_columns
from forest_seg.analysis.stats import (
    COMPLETED,
    DIVERGED,
    EARLY_STOPPED,
    ERROR,
    HEADLINE_METRIC,
    METRICS,
    headline_mask,
    sorted_groups,
    stat_columns,
    status_count,
    unique_trials,
)
from forest_seg.results import BASELINE_PREFIX

OPTIMISTIC = "optimistic: picked on validation"
METRIC_LABELS = {
    "val_miou": "final val mIoU",
    "val_iou": "final val IoU (forest)",
    "best_val_miou": f"best epoch val mIoU ({OPTIMISTIC})",
    "best_val_iou": f"val IoU at the best epoch ({OPTIMISTIC})",
}
COLOUR_BASELINE = "baseline_colour_miou"
ALL_FOREST_BASELINE = "baseline_all_forest_miou"
GAIN = "gain_over_colour"
AT_COMMON = "at_common"  # infix of the common-epoch columns: <metric>_at_common_mean, ...


def metric_label(metric: str) -> str:
    """How a metric is shown: best-epoch numbers always carry the optimistic label."""
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    return f"{metric} ({OPTIMISTIC})" if metric.startswith("best_") else metric


def baseline_columns(trials: pd.DataFrame) -> list[str]:
    """The ``baseline_*`` columns of ``trials`` that hold at least one value."""
    return [c for c in trials.columns
            if c.startswith(BASELINE_PREFIX) and pd.to_numeric(trials[c], errors="coerce")
            .notna().any()]


def common_epoch(trials: pd.DataFrame) -> int | None:
    """The highest epoch every COMPLETED or EARLY_STOPPED trial reached; None when no trial
    was EARLY_STOPPED (then the headline already compares equal epochs) or none reached 1."""
    if "status" not in trials.columns or status_count(trials, EARLY_STOPPED) == 0:
        return None
    ran = trials.loc[trials["status"].isin([COMPLETED, EARLY_STOPPED]), "epochs"]
    epoch = int(ran.min()) if len(ran) else 0
    return epoch if epoch >= 1 else None


def values_at_epoch(trials: pd.DataFrame, epochs: pd.DataFrame, epoch: int,
                    metric: str) -> pd.Series:
    """Each trial's ``metric`` at ``epoch`` from the history (NaN where it has no such row),
    indexed like ``trials``."""
    keys = [k for k in trial_keys(trials) if k in epochs.columns]
    if metric not in epochs.columns or not keys:
        return pd.Series(float("nan"), index=trials.index)
    rows = epochs.loc[epochs["epoch"] == epoch, [*keys, metric]].drop_duplicates(keys)
    merged = trials[keys].merge(rows, on=keys, how="left")
    return pd.to_numeric(merged[metric], errors="coerce").set_axis(trials.index)


def _counts(group: pd.DataFrame, done: pd.DataFrame, metric: str) -> dict:
    reached = sorted(set(done["epochs"])) if "epochs" in done.columns else []
    return {"n_trials": len(group), "n_seeds": int(done[metric].notna().sum()),
            "at_epoch": reached[0] if len(reached) == 1 else float("nan"),
            "n_early_stopped": status_count(group, EARLY_STOPPED),
            "n_diverged": status_count(group, DIVERGED), "n_error": status_count(group, ERROR)}


def _baselines(done: pd.DataFrame, metric: str, baselines: Sequence[str]) -> dict:
    row: dict = {}
    for column in baselines:
        row.update(stat_columns(column, done[column]))
    if COLOUR_BASELINE in baselines:
        gain = done[metric] - pd.to_numeric(done[COLOUR_BASELINE], errors="coerce")
        row.update(stat_columns(GAIN, gain))
    return row


def _label_costs(group: pd.DataFrame) -> dict:
    """The configuration's labelling cost: seconds per tile and hours of its training set
    (the median over its trials: every seed of a configuration trains on as many tiles)."""
    return {c: float(group[c].median()) for c in COST_COLUMNS}


def _at_common(group: pd.DataFrame, epoch: int, metrics: Sequence[str]) -> dict:
    ran = group[group["status"].isin([COMPLETED, EARLY_STOPPED])]
    first = f"_{AT_COMMON}_{metrics[0]}"
    row: dict = {"common_epoch": epoch, "n_seeds_at_common": int(ran[first].notna().sum())}
    for m in metrics:
        row.update(stat_columns(f"{m}_{AT_COMMON}", ran[f"_{AT_COMMON}_{m}"]))
    return row


def summarize(trials: pd.DataFrame, metric: str = HEADLINE_METRIC, *,
              metrics: Sequence[str] | None = None,
              epochs: pd.DataFrame | None = None,
              cost: CostModel | None = None) -> pd.DataFrame:
    """Per configuration: trial counts and the mean and 95% interval of each metric over the
    seeds that ran the same number of epochs (module docstring).

    ``metric`` (default: the final epoch's ``val_miou``) is the one seeds are counted on;
    ``metrics`` (default: ``metric`` then ``val_miou``, ``val_iou``, ``best_val_miou``,
    ``best_val_iou``, those present) are summarised. Columns: ``config`` (label), the varying
    config columns, ``n_trials``, ``n_seeds`` (COMPLETED trials with a ``metric`` value),
    ``at_epoch`` (the epochs they ran), ``n_early_stopped``, ``n_diverged``, ``n_error``; per
    metric ``m``: ``m_mean``, ``m_sd``, ``m_ci_lo``, ``m_ci_hi``; per ``baseline_*`` column
    ``b`` present: ``b_mean`` ... ``b_ci_hi``, and ``gain_over_colour_mean`` ...
    ``gain_over_colour_ci_hi`` when ``baseline_colour_miou`` is present; when ``epochs`` (the
    history) is given and some trial was EARLY_STOPPED: ``common_epoch``,
    ``n_seeds_at_common`` and ``m_at_common_mean`` ... ``m_at_common_ci_hi`` for each metric
    of the history; with a ``points`` column, ``label_seconds_per_tile`` and ``label_hours``
    under ``cost`` (default :class:`~forest_seg.analysis.cost.CostModel`; hours NaN when the
    trials lack ``train_tiles``); last ``inconclusive`` (``n_seeds < 2``).
    """
    trials = unique_trials(trials)
    priced = "points" in trials.columns
    if priced:
        trials = with_label_costs(trials, cost or CostModel())
    wanted = [metric, *(m for m in (metrics or METRICS) if m != metric)]
    metrics = [m for m in wanted if m in trials.columns]
    baselines = baseline_columns(trials)
    cols = varying_columns(trials)
    epoch = common_epoch(trials) if epochs is not None and not epochs.empty else None
    history_metrics = [m for m in metrics if epoch is not None and m in epochs.columns]
    for m in history_metrics:
        trials = trials.assign(**{f"_{AT_COMMON}_{m}": values_at_epoch(trials, epochs, epoch, m)})
    headline = headline_mask(trials)
    rows = []
    for values, group in sorted_groups(trials, cols):
        done = group[headline.loc[group.index]]
        row = {"config": config_label(values, cols), **values, **_counts(group, done, metric)}
        for m in metrics:
            row.update(stat_columns(m, done[m]))
        row.update(_baselines(done, metric, baselines))
        if history_metrics:
            row.update(_at_common(group, epoch, history_metrics))
        if priced:
            row.update(_label_costs(group))
        row["inconclusive"] = row["n_seeds"] < 2
        rows.append(row)
    return pd.DataFrame(rows)
