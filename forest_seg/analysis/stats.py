"""Statistics over trials: per-configuration summaries, paired differences, lr instability, ASHA.

Conventions:

- 95% confidence interval of a mean over ``n`` seeds: ``mean +- t * sd / sqrt(n)``, ``sd`` the
  sample standard deviation (ddof=1), ``t`` the 0.975 quantile of Student's t with ``n - 1``
  degrees of freedom from :data:`T_975` (no scipy). For a df between tabulated values the next
  *smaller* tabulated df is used, whose quantile is larger: the interval is slightly wider than
  exact, never narrower. ``n < 2``: sd and interval are NaN and the row is ``inconclusive``.
- Missing metric values (an ERROR trial) are left out; ``n_seeds`` counts the values used.
- Paired differences between values of a factor (``points`` by default, or ``point_strategy``)
  are computed within each group of the other varying config columns, over the seeds present at
  both values (same seed = same tiles and split). Duplicate (group, value, seed) trials (pooled
  experiments) are averaged. For ``point_strategy`` the dense rows (``points=0``) are left out:
  a dense trial labels every pixel, so its strategy means nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from forest_seg.analysis.load import (
    config_columns,
    config_label,
    format_value,
    norm_value,
    trial_keys,
    varying_columns,
)

METRICS = ("best_val_miou", "val_miou", "best_val_iou", "val_iou")
RANKING_METRICS = ("best_val_miou", "val_miou")
DENSE_POINTS = 0
# factors that mean nothing for a dense (points=0) trial: its rows are left out when comparing
POINT_ONLY_FACTORS = ("point_strategy",)

# Two-sided 95% quantiles t_{0.975, df} of Student's t distribution.
T_975 = {
    1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 7: 2.3646, 8: 2.3060,
    9: 2.2622, 10: 2.2281, 11: 2.2010, 12: 2.1788, 13: 2.1604, 14: 2.1448, 15: 2.1314,
    16: 2.1199, 17: 2.1098, 18: 2.1009, 19: 2.0930, 20: 2.0860, 21: 2.0796, 22: 2.0739,
    23: 2.0687, 24: 2.0639, 25: 2.0595, 26: 2.0555, 27: 2.0518, 28: 2.0484, 29: 2.0452,
    30: 2.0423, 40: 2.0211, 60: 2.0003, 120: 1.9799, math.inf: 1.9600,
}


def t_quantile(df: float) -> float:
    """``t_{0.975, df}``; the next smaller tabulated df between entries (conservative); NaN if
    ``df < 1``."""
    if not df >= 1:
        return math.nan
    return T_975[max(k for k in T_975 if k <= df)]


def mean_ci(values: Sequence[float] | pd.Series) -> dict[str, float]:
    """``n``, ``mean``, ``sd`` (ddof=1), ``ci_lo``, ``ci_hi`` (95%) of the non-NaN values."""
    x = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").dropna().to_numpy(float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n >= 2 else math.nan
    half = t_quantile(n - 1) * sd / math.sqrt(n) if n >= 2 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "ci_lo": mean - half, "ci_hi": mean + half}


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


def _sorted_groups(trials: pd.DataFrame, columns: Sequence[str]):
    """Yield ``(values dict, sub-frame)`` per distinct configuration, sorted by value."""
    ids, keys = config_ids(trials, columns)

    def sort_key(key: tuple) -> tuple:
        # None last; numbers before strings, each kind in its natural order.
        return tuple((v is None, not isinstance(v, (int, float)),
                      v if isinstance(v, (int, float)) else str(v)) for v in key)

    for i in sorted(range(len(keys)), key=lambda i: sort_key(keys[i])):
        yield dict(zip(columns, keys[i], strict=True)), trials[ids == i]


def summarize(trials: pd.DataFrame, metrics: Sequence[str] = METRICS,
              metric: str = "best_val_miou") -> pd.DataFrame:
    """Per configuration (the varying config columns, seed excluded): seeds and metric stats.

    Columns: ``config`` (label), the varying config columns, ``n_trials``, ``n_seeds`` (values of
    ``metric`` used), ``n_failed`` (DIVERGED or ERROR trials), then per metric ``m``:
    ``m_mean``, ``m_sd``, ``m_ci_lo``, ``m_ci_hi``; last ``inconclusive`` (``n_seeds < 2``).
    """
    cols = varying_columns(trials)
    metrics = [m for m in metrics if m in trials.columns]
    rows = []
    for values, group in _sorted_groups(trials, cols):
        row: dict = {"config": config_label(values, cols), **values,
                     "n_trials": len(group),
                     "n_seeds": int(group[metric].notna().sum()),
                     "n_failed": int(group["status"].isin(["DIVERGED", "ERROR"]).sum())
                     if "status" in group.columns else 0}
        for m in metrics:
            stats = mean_ci(group[m])
            for k in ("mean", "sd", "ci_lo", "ci_hi"):
                row[f"{m}_{k}"] = stats[k]
        row["inconclusive"] = row["n_seeds"] < 2
        rows.append(row)
    return pd.DataFrame(rows)


def _factor_pairs(values: list, factor: str, pairs: str) -> list[tuple]:
    """``(a, b)`` pairs to compare; the difference reported is ``metric(a) - metric(b)``.

    Numbers are ordered by size, text (a point strategy) alphabetically."""
    dense = [v for v in values if factor == "points" and v == DENSE_POINTS]
    rest = [v for v in values if v not in dense]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rest)
    rest = sorted(rest) if numeric else sorted(rest, key=str)
    if pairs == "all":  # numbers: larger minus smaller; text: alphabetical, a before b
        ordered = dense + (rest[::-1] if numeric else rest)
        return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]]
    if pairs != "adjacent":
        raise ValueError(f"pairs={pairs!r}: expected 'adjacent' or 'all'")
    out = [(rest[i + 1], rest[i]) for i in range(len(rest) - 1)]
    out += [(d, v) for d in dense for v in rest]
    return out


def verdict(n_pairs: int, ci_lo: float, ci_hi: float, factor: str, a: object, b: object) -> str:
    """Plain label of a paired difference ``a - b`` with its 95% interval."""
    if n_pairs == 0:
        return "no common seeds"
    if n_pairs < 2:
        return "inconclusive (1 seed)"
    if ci_lo <= 0 <= ci_hi:
        return "within noise"
    better = a if ci_lo > 0 else b
    return f"{factor}={format_value(better)} better"


def paired_differences(trials: pd.DataFrame, metric: str = "best_val_miou",
                       factor: str = "points", pairs: str = "adjacent") -> pd.DataFrame:
    """Differences ``metric(a) - metric(b)`` between values of ``factor``, paired by seed.

    Within each group of the other varying config columns, compares (``pairs="adjacent"``)
    each value with the next larger one (``a`` = larger, ``b`` = smaller) and, for
    ``factor="points"``, the dense reference ``points=0`` (``a``) with every point count (``b``);
    ``pairs="all"`` compares every pair (numbers: ``a`` the larger; text such as point
    strategies: alphabetical, ``a`` first). For ``factor="point_strategy"`` (use
    ``pairs="all"``) the dense ``points=0`` rows are left out first. Columns: ``group``
    (label), the group columns, ``a``, ``b``, ``n_pairs``, ``mean_diff``, ``sd_diff``,
    ``ci_lo``, ``ci_hi``, ``verdict`` (``no common seeds``, ``inconclusive (1 seed)``,
    ``within noise`` when the interval contains 0, else ``<factor>=<value> better``).
    """
    out_cols = ["group", "a", "b", "n_pairs", "mean_diff", "sd_diff", "ci_lo", "ci_hi", "verdict"]
    if factor not in trials.columns or "seed" not in trials.columns:
        return pd.DataFrame(columns=out_cols)
    if factor in POINT_ONLY_FACTORS and "points" in trials.columns:
        trials = trials[trials["points"].map(norm_value) != DENSE_POINTS]
    group_cols = [c for c in varying_columns(trials) if c != factor]
    rows = []
    for values, group in _sorted_groups(trials, group_cols):
        table = group.assign(_v=group[factor].map(norm_value)).pivot_table(
            index="seed", columns="_v", values=metric, aggfunc="mean")
        for a, b in _factor_pairs(list(table.columns), factor, pairs):
            diff = (table[a] - table[b]).dropna()
            stats = mean_ci(diff)
            rows.append({
                "group": config_label(values, group_cols) if group_cols else "",
                **values, "a": a, "b": b, "n_pairs": stats["n"], "mean_diff": stats["mean"],
                "sd_diff": stats["sd"], "ci_lo": stats["ci_lo"], "ci_hi": stats["ci_hi"],
                "verdict": verdict(stats["n"], stats["ci_lo"], stats["ci_hi"], factor, a, b),
            })
    if not rows:
        return pd.DataFrame(columns=["group", *group_cols, *out_cols[1:]])
    return pd.DataFrame(rows)


def _volatility(val_loss: pd.Series) -> float:
    """Mean absolute change of val loss between successive epochs (finite values only)."""
    x = pd.to_numeric(val_loss, errors="coerce").to_numpy(float)
    x = x[np.isfinite(x)]
    return float(np.abs(np.diff(x)).mean()) if len(x) >= 2 else math.nan


def lr_instability(trials: pd.DataFrame, epochs: pd.DataFrame | None = None,
                   lr_col: str = "lr") -> pd.DataFrame:
    """Per learning rate: how (un)stable training is.

    Columns: ``lr``, ``n_trials``, ``divergence_rate`` (share of DIVERGED trials),
    ``early_stop_rate`` (share of EARLY_STOPPED), ``volatility`` (per trial the mean absolute
    change of val loss between successive epochs, finite values only, then averaged over the
    lr's trials; NaN without history), ``seed_sd`` (sd of final val mIoU across seeds within
    each configuration, averaged over the lr's configurations), ``best_last_gap`` (mean of
    ``best_val_miou - val_miou``: how much was lost by the last epoch, i.e. overfitting).
    """
    cols = ["lr", "n_trials", "divergence_rate", "early_stop_rate", "volatility", "seed_sd",
            "best_last_gap"]
    if lr_col not in trials.columns:
        return pd.DataFrame(columns=cols)
    trials = trials.assign(_vol=math.nan)
    if epochs is not None and not epochs.empty and "val_loss" in epochs.columns:
        keys = [k for k in trial_keys(trials) if k in epochs.columns]
        vol = epochs.groupby(keys)["val_loss"].apply(_volatility).rename("_vol").reset_index()
        trials = trials.drop(columns="_vol").merge(vol, on=keys, how="left")
    cfg_cols = [c for c in varying_columns(trials) if c != lr_col]
    rows = []
    for values, group in _sorted_groups(trials, [lr_col]):
        sds = [mean_ci(g["val_miou"])["sd"] for _, g in _sorted_groups(group, cfg_cols)]
        sds = [s for s in sds if not math.isnan(s)]
        rows.append({
            "lr": values[lr_col], "n_trials": len(group),
            "divergence_rate": float((group["status"] == "DIVERGED").mean()),
            "early_stop_rate": float((group["status"] == "EARLY_STOPPED").mean()),
            "volatility": float(group["_vol"].mean()) if group["_vol"].notna().any()
            else math.nan,
            "seed_sd": float(np.mean(sds)) if sds else math.nan,
            "best_last_gap": float((group["best_val_miou"] - group["val_miou"]).mean()),
        })
    return pd.DataFrame(rows, columns=cols)


def best_configuration(trials: pd.DataFrame, metric: str = "best_val_miou",
                       columns: Sequence[str] | None = None) -> tuple[dict | None, float]:
    """The configuration with the highest mean ``metric`` over seeds (first one on a tie),
    and that mean; ``(None, nan)`` when no trial has a value."""
    cols = varying_columns(trials) if columns is None else list(columns)
    best, best_score = None, math.nan
    for values, group in _sorted_groups(trials, cols):
        score = group[metric].mean()
        if pd.notna(score) and not score <= best_score:
            best, best_score = values, float(score)
    return best, best_score


def _mean_of_config(trials: pd.DataFrame, config: dict, metric: str) -> float:
    mask = pd.Series(True, index=trials.index)
    for col, value in config.items():
        mask &= trials[col].map(norm_value) == value
    return float(trials.loc[mask, metric].mean()) if mask.any() else math.nan


def compare_early_stopping(asha: pd.DataFrame, fifo: pd.DataFrame,
                           metric: str = "best_val_miou") -> dict:
    """What early stopping (ASHA) saved and cost against a full run (FIFO) of the same grid.

    Returns a dict: ``asha_trial_epochs`` / ``fifo_trial_epochs`` (sum of epochs reached),
    ``ratio`` (asha / fifo), ``saved_fraction`` (1 - ratio), ``asha_best`` / ``fifo_best``
    (config dicts, best mean ``metric`` over seeds), ``asha_best_score`` / ``fifo_best_score``
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
