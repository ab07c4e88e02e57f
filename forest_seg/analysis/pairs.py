"""Paired differences between values of one factor, with Holm-corrected p-values.

A *factor* is any config column: ``points`` (the default), ``point_strategy``, ``head``,
``encoder_stages``, ``lr``... Differences are computed within each group of the other varying
config columns, over the seeds present at both values (same seed = same tiles and split), from
headline (COMPLETED) trials only, so that no difference mixes epoch counts. For
``point_strategy`` the dense rows (``points=0``) are left out: a dense trial labels every
pixel, so its strategy means nothing. The comparisons made in one call are one family: their
p-values (paired t-test) are adjusted together with Holm's method, and the verdicts use the
adjusted ``p_holm``.
"""

from __future__ import annotations

import pandas as pd

from forest_seg.analysis.load import config_label, format_value, norm_value, varying_columns
from forest_seg.analysis.stats import (
    ALPHA,
    DENSE_POINTS,
    HEADLINE_METRIC,
    headline_mask,
    holm,
    mean_ci,
    paired_p_value,
    sorted_groups,
    unique_trials,
)

# factors that mean nothing for a dense (points=0) trial: its rows are left out when comparing
POINT_ONLY_FACTORS = ("point_strategy",)
NOT_RESOLVED = "not resolved"
PAIR_COLUMNS = ["a", "b", "n_pairs", "mean_diff", "sd_diff", "ci_lo", "ci_hi", "p_value",
                "p_holm", "verdict"]


def factor_pairs(values: list, factor: str, pairs: str) -> list[tuple]:
    """``(a, b)`` pairs to compare; the difference reported is ``metric(a) - metric(b)``.

    Numbers are ordered by size, text (a point strategy, a head) alphabetically."""
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


def verdict(n_pairs: int, mean_diff: float, p_holm: float, factor: str, a: object,
            b: object) -> str:
    """Plain label of a paired difference ``a - b``: ``no common completed seeds``,
    ``inconclusive (1 seed)``, ``<factor>=<value> better`` when ``p_holm < 0.05``, else
    ``not resolved`` (the seeds cannot tell the two apart; it does not say they are equal)."""
    if n_pairs == 0:
        return "no common completed seeds"
    if n_pairs < 2:
        return "inconclusive (1 seed)"
    if not p_holm < ALPHA:
        return NOT_RESOLVED
    return f"{factor}={format_value(a if mean_diff > 0 else b)} better"


def by_seed(group: pd.DataFrame, factor: str, metric: str) -> pd.DataFrame:
    """A (seed x factor value) table of ``metric``; NaN where a trial is not a headline one
    (so a value without headline trials keeps an all-NaN column)."""
    values = pd.to_numeric(group[metric], errors="coerce").where(headline_mask(group))
    frame = group.assign(_v=group[factor].map(norm_value), _m=values)
    return frame.groupby(["seed", "_v"], sort=False)["_m"].first().unstack("_v")


def _comparison(table: pd.DataFrame, a: object, b: object) -> dict:
    diff = (table[a] - table[b]).dropna()
    stats = mean_ci(diff)
    return {"a": a, "b": b, "n_pairs": stats["n"], "mean_diff": stats["mean"],
            "sd_diff": stats["sd"], "ci_lo": stats["ci_lo"], "ci_hi": stats["ci_hi"],
            "p_value": paired_p_value(diff)}


def paired_differences(trials: pd.DataFrame, metric: str = HEADLINE_METRIC,
                       factor: str = "points", pairs: str = "adjacent") -> pd.DataFrame:
    """Differences ``metric(a) - metric(b)`` between values of ``factor``, paired by seed.

    Within each group of the other varying config columns, compares (``pairs="adjacent"``)
    each value with the next larger one (``a`` = larger, ``b`` = smaller) and, for
    ``factor="points"``, the dense reference ``points=0`` (``a``) with every point count (``b``);
    ``pairs="all"`` compares every pair (numbers: ``a`` the larger; text such as point
    strategies or heads: alphabetical, ``a`` first). Columns: ``group`` (label, empty when
    nothing else varies), the group columns, ``a``, ``b``, ``n_pairs``, ``mean_diff``,
    ``sd_diff``, ``ci_lo``, ``ci_hi`` (95% t-interval), ``p_value`` (two-sided paired t-test),
    ``p_holm`` (Holm-adjusted over every comparison of this call), ``verdict`` (see
    :func:`verdict`).
    """
    if factor not in trials.columns or "seed" not in trials.columns:
        return pd.DataFrame(columns=["group", *PAIR_COLUMNS])
    trials = unique_trials(trials)
    if factor in POINT_ONLY_FACTORS and "points" in trials.columns:
        trials = trials[trials["points"].map(norm_value) != DENSE_POINTS]
    group_cols = [c for c in varying_columns(trials) if c != factor]
    rows = []
    for values, group in sorted_groups(trials, group_cols):
        table = by_seed(group, factor, metric)
        for a, b in factor_pairs(list(table.columns), factor, pairs):
            rows.append({"group": config_label(values, group_cols) if group_cols else "",
                         **values, **_comparison(table, a, b)})
    if not rows:
        return pd.DataFrame(columns=["group", *group_cols, *PAIR_COLUMNS])
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["p_value"])
    out["verdict"] = [verdict(r.n_pairs, r.mean_diff, r.p_holm, factor, r.a, r.b)
                      for r in out.itertuples()]
    return out
