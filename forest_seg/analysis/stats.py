"""Statistics over trials: intervals, p-values, headline trials, lr instability, ASHA vs FIFO.

Conventions:

- 95% confidence interval of a mean over ``n`` seeds: ``mean +- t * sd / sqrt(n)``, ``sd`` the
  sample standard deviation (ddof=1), ``t`` the 0.975 quantile of Student's t with ``n - 1``
  degrees of freedom (``scipy.stats.t.ppf``). ``n < 2``: sd and interval are NaN.
- A paired comparison's ``p_value`` is the two-sided one-sample t-test of the paired
  differences against 0 (the paired t-test); ``p_holm`` adjusts the p-values of one family of
  comparisons with Holm's step-down method (:func:`holm`).
- Headline numbers never mix epoch counts: only a configuration's COMPLETED trials (at its
  largest epoch count, which is the planned one) enter a headline mean (:func:`headline_mask`);
  EARLY_STOPPED, DIVERGED and ERROR trials are counted, never averaged in. The headline metric
  is the final epoch's ``val_miou``; ``best_*`` values are picked on the validation set itself
  and are optimistic.
- Missing metric values (an ERROR trial) are left out; ``n_seeds`` counts the values used.
- Repeated (config, seed) trials are one run, counted once (``load.drop_duplicate_trials``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from forest_seg.analysis.load import (
    config_columns,
    config_label,
    drop_duplicate_trials,
    norm_value,
    trial_keys,
    varying_columns,
)
from forest_seg.labelling_cost import DENSE_POINTS  # noqa: F401 - the analysis's name for it

HEADLINE_METRIC = "val_miou"
METRICS = ("val_miou", "val_iou", "best_val_miou", "best_val_iou")
COMPLETED, EARLY_STOPPED, DIVERGED, ERROR = "COMPLETED", "EARLY_STOPPED", "DIVERGED", "ERROR"
ALPHA = 0.05  # significance level of the verdicts (after Holm's adjustment)
STAT_KEYS = ("mean", "sd", "ci_lo", "ci_hi")


def t_quantile(df: float, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom
    (``t_{0.975, df}`` by default); NaN if ``df`` is not positive."""
    if not df > 0:
        return math.nan
    return float(stats.t.ppf(0.5 + level / 2, df))


def _finite(values: Sequence[float] | pd.Series) -> np.ndarray:
    x = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(float)
    return x[~np.isnan(x)]


def mean_ci(values: Sequence[float] | pd.Series) -> dict[str, float]:
    """``n``, ``mean``, ``sd`` (ddof=1), ``ci_lo``, ``ci_hi`` (95%) of the non-NaN values."""
    x = _finite(values)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n >= 2 else math.nan
    half = t_quantile(n - 1) * sd / math.sqrt(n) if n >= 2 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "ci_lo": mean - half, "ci_hi": mean + half}


def stat_columns(prefix: str, values: Sequence[float] | pd.Series) -> dict[str, float]:
    """:func:`mean_ci` of ``values`` as ``<prefix>_mean``, ``_sd``, ``_ci_lo``, ``_ci_hi``."""
    result = mean_ci(values)
    return {f"{prefix}_{k}": result[k] for k in STAT_KEYS}


def paired_p_value(differences: Sequence[float] | pd.Series) -> float:
    """Two-sided p-value of the paired t-test: the mean of the non-NaN ``differences`` against 0
    (``t = mean / (sd / sqrt(n))``, ``n - 1`` degrees of freedom). NaN for fewer than 2
    differences; differences all equal (sd 0): 1 if they are 0, else 0."""
    x = _finite(differences)
    n = len(x)
    if n < 2:
        return math.nan
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    return float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def holm(p_values: Sequence[float] | pd.Series) -> list[float]:
    """Holm's step-down adjustment of one family of p-values (NaN entries stay NaN and are not
    counted in the family). With the ``m`` p-values sorted ``p_(1) <= ... <= p_(m)``:
    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))``; returned in the input order.
    Example: ``[0.01, 0.04, 0.03]`` -> ``[0.03, 0.06, 0.06]``."""
    p = np.asarray(pd.to_numeric(pd.Series(p_values, dtype=object), errors="coerce"), float)
    out = np.full(len(p), math.nan)
    index = np.flatnonzero(~np.isnan(p))
    order = index[np.argsort(p[index], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def config_ids(trials: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.Series, list[tuple]]:
    """Integer configuration id per row (NaN-safe) and the value tuple of each id."""
    keys: dict[tuple, int] = {}
    ids = []
    if not columns:  # itertuples over zero columns yields no rows at all
        return pd.Series(0, index=trials.index, dtype=int), [()] if len(trials) else []
    for values in trials[list(columns)].itertuples(index=False, name=None):
        key = tuple(norm_value(v) for v in values)
        ids.append(keys.setdefault(key, len(keys)))
    return pd.Series(ids, index=trials.index, dtype=int), list(keys)


def sorted_groups(trials: pd.DataFrame, columns: Sequence[str]
                  ) -> Iterator[tuple[dict, pd.DataFrame]]:
    """Yield ``(values dict, sub-frame)`` per distinct configuration, sorted by value."""
    ids, keys = config_ids(trials, columns)

    def sort_key(key: tuple) -> tuple:
        # None last; numbers before strings, each kind in its natural order.
        return tuple((v is None, not isinstance(v, (int, float)),
                      v if isinstance(v, (int, float)) else str(v)) for v in key)

    for i in sorted(range(len(keys)), key=lambda i: sort_key(keys[i])):
        yield dict(zip(columns, keys[i], strict=True)), trials[ids == i]


def unique_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` with repeated (config, seed) runs counted once (the loader's rule)."""
    return drop_duplicate_trials(trials)[0]


def headline_mask(trials: pd.DataFrame) -> pd.Series:
    """True for the trials a headline mean may use: COMPLETED, at the largest epoch count of
    the COMPLETED trials of their configuration (all config columns but ``seed``), so that no
    mean mixes epoch counts. Without a ``status`` column every trial counts as COMPLETED."""
    done = (trials["status"] == COMPLETED) if "status" in trials.columns else pd.Series(
        True, index=trials.index)
    if "epochs" not in trials.columns or not done.any():
        return done
    ids, _ = config_ids(trials, config_columns(trials))
    reached = trials["epochs"].where(done)
    return done & (reached == reached.groupby(ids).transform("max"))


def status_count(trials: pd.DataFrame, status: str) -> int:
    """How many of ``trials`` have ``status`` (0 without a status column)."""
    return int((trials["status"] == status).sum()) if "status" in trials.columns else 0


def _volatility(val_loss: pd.Series) -> float:
    """Mean absolute change of val loss between successive epochs (finite values only)."""
    x = pd.to_numeric(val_loss, errors="coerce").to_numpy(float)
    x = x[np.isfinite(x)]
    return float(np.abs(np.diff(x)).mean()) if len(x) >= 2 else math.nan


def _with_volatility(trials: pd.DataFrame, epochs: pd.DataFrame | None) -> pd.DataFrame:
    """``trials`` with a ``_vol`` column: each trial's val-loss volatility (NaN without
    history)."""
    trials = trials.assign(_vol=math.nan)
    if epochs is None or epochs.empty or "val_loss" not in epochs.columns:
        return trials
    keys = [k for k in trial_keys(trials) if k in epochs.columns]
    vol = epochs.groupby(keys)["val_loss"].apply(_volatility).rename("_vol").reset_index()
    merged = trials.drop(columns="_vol").merge(vol, on=keys, how="left")
    return merged.set_axis(trials.index)


def _instability_row(group: pd.DataFrame) -> dict:
    """The instability numbers of one (group, lr) cell; ``seed_sd`` and ``best_last_gap`` over
    its headline (COMPLETED) trials only."""
    done = group[headline_mask(group)]
    return {
        "n_trials": len(group), "n_completed": len(done),
        "divergence_rate": status_count(group, DIVERGED) / len(group),
        "early_stop_rate": status_count(group, EARLY_STOPPED) / len(group),
        "volatility": float(group["_vol"].mean()) if group["_vol"].notna().any()
        else math.nan,
        "seed_sd": mean_ci(done["val_miou"])["sd"],
        "best_last_gap": float((done["best_val_miou"] - done["val_miou"]).mean())
        if len(done) else math.nan,
    }


def lr_instability(trials: pd.DataFrame, epochs: pd.DataFrame | None = None,
                   lr_col: str = "lr") -> pd.DataFrame:
    """How (un)stable training is per learning rate, on matched configurations only.

    Learning rates are compared only within a group of equal values of every other varying
    config column (points, point_strategy, head, lr_schedule, ...): a row per (group, lr),
    never pooling configurations across groups. Columns: ``group`` (label; ``all trials``
    when nothing else varies), the group columns, ``lr``, ``n_trials``, ``n_completed``,
    ``divergence_rate`` (share of DIVERGED trials), ``early_stop_rate`` (share of
    EARLY_STOPPED), ``volatility`` (per trial the mean absolute change of val loss between
    successive epochs, finite values only, averaged over the cell's trials; NaN without
    history), ``seed_sd`` (sd of the final val mIoU across the COMPLETED seeds) and
    ``best_last_gap`` (mean over COMPLETED seeds of ``best_val_miou - val_miou``: how much was
    lost by the last epoch; the best epoch is picked on validation, so this is optimistic).
    """
    cols = ["lr", "n_trials", "n_completed", "divergence_rate", "early_stop_rate",
            "volatility", "seed_sd", "best_last_gap"]
    if lr_col not in trials.columns:
        return pd.DataFrame(columns=["group", *cols])
    trials = _with_volatility(unique_trials(trials), epochs)
    group_cols = [c for c in varying_columns(trials) if c != lr_col]
    rows = []
    for values, group in sorted_groups(trials, group_cols):
        for lr, cell in sorted_groups(group, [lr_col]):
            rows.append({"group": config_label(values, group_cols), **values,
                         "lr": lr[lr_col], **_instability_row(cell)})
    return pd.DataFrame(rows, columns=["group", *group_cols, *cols])


def best_configuration(trials: pd.DataFrame, metric: str = HEADLINE_METRIC,
                       columns: Sequence[str] | None = None) -> tuple[dict | None, float]:
    """The configuration with the highest mean ``metric`` over its headline (COMPLETED) seeds
    (first one on a tie), and that mean; ``(None, nan)`` when no such trial has a value."""
    trials = unique_trials(trials)
    cols = varying_columns(trials) if columns is None else list(columns)
    done = trials[headline_mask(trials)]
    best, best_score = None, math.nan
    for values, group in sorted_groups(done, cols):
        score = group[metric].mean()
        if pd.notna(score) and not score <= best_score:
            best, best_score = values, float(score)
    return best, best_score


def _mean_of_config(trials: pd.DataFrame, config: dict, metric: str) -> float:
    """Mean ``metric`` over the headline seeds of one configuration (NaN when none)."""
    trials = unique_trials(trials)
    mask = headline_mask(trials)
    for col, value in config.items():
        mask &= trials[col].map(norm_value) == value
    return float(trials.loc[mask, metric].mean()) if mask.any() else math.nan


def compare_early_stopping(asha: pd.DataFrame, fifo: pd.DataFrame,
                           metric: str = HEADLINE_METRIC) -> dict:
    """What early stopping (ASHA) saved and cost against a full run (FIFO) of the same grid.

    Returns a dict: ``asha_trial_epochs`` / ``fifo_trial_epochs`` (sum of epochs reached),
    ``ratio`` (asha / fifo), ``saved_fraction`` (1 - ratio), ``asha_best`` / ``fifo_best``
    (config dicts, best mean ``metric`` over COMPLETED seeds: ASHA's choice is among the
    configurations it ran to the end), ``asha_best_score`` / ``fifo_best_score``
    (those means in their own run), ``same_best``, ``asha_choice_in_fifo`` (FIFO's mean for
    ASHA's choice) and ``regret`` (``fifo_best_score - asha_choice_in_fifo``, 0 when the same;
    NaN when FIFO lacks ASHA's choice). Configurations are the config columns (seed excluded)
    present in both runs that vary in either.
    """
    shared = [c for c in config_columns(asha) if c in set(config_columns(fifo))]
    both = pd.concat([asha[shared], fifo[shared]], ignore_index=True)
    cols = varying_columns(both, shared)
    asha_epochs = float(asha["epochs"].sum())
    fifo_epochs = float(fifo["epochs"].sum())
    ratio = asha_epochs / fifo_epochs if fifo_epochs else math.nan
    asha_best, asha_score = best_configuration(asha, metric, cols)
    fifo_best, fifo_score = best_configuration(fifo, metric, cols)
    same = asha_best is not None and asha_best == fifo_best
    in_fifo = _mean_of_config(fifo, asha_best, metric) if asha_best is not None else math.nan
    return {
        "metric": metric, "columns": cols,
        "asha_trials": len(asha), "fifo_trials": len(fifo),
        "asha_trial_epochs": asha_epochs, "fifo_trial_epochs": fifo_epochs,
        "ratio": ratio, "saved_fraction": 1 - ratio,
        "asha_best": asha_best, "fifo_best": fifo_best,
        "asha_best_score": asha_score, "fifo_best_score": fifo_score,
        "same_best": same, "asha_choice_in_fifo": in_fifo,
        "regret": 0.0 if same else fifo_score - in_fifo,
    }


def comparison_table(result: dict) -> pd.DataFrame:
    """The dict of :func:`compare_early_stopping` as a two-column (quantity, value) table."""
    cols = result["columns"]

    def label(config: dict | None) -> str:
        return "none (no metric values)" if config is None else config_label(config, cols)

    rows = [
        ("trials (ASHA / FIFO)", f"{result['asha_trials']} / {result['fifo_trials']}"),
        ("trial-epochs ASHA", f"{result['asha_trial_epochs']:g}"),
        ("trial-epochs FIFO", f"{result['fifo_trial_epochs']:g}"),
        ("ASHA / FIFO", f"{result['ratio']:.3f}"),
        ("saved by ASHA", f"{100 * result['saved_fraction']:.1f}%"),
        ("best config ASHA", f"{label(result['asha_best'])} "
                             f"({result['asha_best_score']:.4f})"),
        ("best config FIFO", f"{label(result['fifo_best'])} "
                             f"({result['fifo_best_score']:.4f})"),
        ("same best", "yes" if result["same_best"] else "no"),
        ("FIFO's mean for ASHA's choice", f"{result['asha_choice_in_fifo']:.4f}"),
        (f"regret ({result['metric']})", f"{result['regret']:.4f}"),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value"])


def status_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per experiment and status (columns: experiment, one per status seen, total)."""
    by = "experiment" if "experiment" in trials.columns else None
    frame = trials.assign(experiment=trials[by] if by else "all")
    table = pd.crosstab(frame["experiment"], frame["status"])
    table["total"] = table.sum(axis=1)
    table.columns.name = None
    return table.reset_index()
