"""What labels buy: the cheapest labelling whose mIoU is within ``delta`` of the best, priced by
the annotation cost model of :mod:`forest_seg.labelling_cost` (:class:`CostModel`, its
defaults and their sources). A trial's labelling hours are its training tiles times the cost
of one tile's labels, over 3600 (the ``train_tiles`` column a trial reports; without it hours
are NaN and labellings rank by cost per tile, which is the same order when every labelling
trained on the same tiles).

:func:`labelling_verdict` compares the labellings (point counts and dense) of one group of the
other config columns, paired by seed (same seed = same tiles and split), on headline
(COMPLETED, final epoch) trials only. With ``best`` the labelling of highest mean and ``diff``
the per-seed ``metric(best) - metric(candidate)`` of each cheaper candidate, two one-sided
t-tests are made on ``diff``: *within* (H1: mean diff < delta, the candidate is adequate) and
*beyond* (H1: mean diff > delta, it is not). Their p-values form one family adjusted with
Holm's method. The cheapest adequate labelling is the cheapest candidate shown *within* (or the
best itself); the verdict is resolved when every labelling cheaper than it is shown *beyond*.
Otherwise it says which comparisons are open and about how many seeds each would need, from
the observed paired standard deviation (one-sided t-test at the Bonferroni level, 80% power).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from forest_seg.analysis.load import config_label, norm_value, varying_columns
from forest_seg.analysis.pairs import by_seed, paired_differences
from forest_seg.analysis.stats import (
    ALPHA,
    DENSE_POINTS,
    HEADLINE_METRIC,
    headline_mask,
    holm,
    mean_ci,
    sorted_groups,
    unique_trials,
)
from forest_seg.errors import ConfigError
from forest_seg.labelling_cost import (  # noqa: F401 - the cost model, used with its analysis
    DEFAULT_DELTA,
    SECONDS_PER_MASK,
    SECONDS_PER_POINT,
    CostModel,
    labelling_name,
)
from forest_seg.results import TRAIN_TILES

POWER = 0.8
MAX_SEEDS_ESTIMATE = 1000
COST_COLUMNS = ("label_seconds_per_tile", "label_hours")
# verdict-table column: the baseline it averages (the colour table is built from the same labels)
BASELINE_MEANS = {"colour_table_mean": "baseline_colour_miou",
                  "all_forest_mean": "baseline_all_forest_miou"}
BEST, WITHIN, BEYOND, OPEN = "best", "within delta", "worse by more than delta", "not resolved"


def with_label_costs(trials: pd.DataFrame, model: CostModel) -> pd.DataFrame:
    """``trials`` with ``label_seconds_per_tile`` and ``label_hours`` (NaN without a
    ``train_tiles`` column) per row; needs a ``points`` column."""
    if "points" not in trials.columns:
        raise ConfigError("cannot price labels: the trials have no `points` column")
    per_tile = trials["points"].map(model.seconds_per_tile).astype(float)
    tiles = (pd.to_numeric(trials[TRAIN_TILES], errors="coerce") if TRAIN_TILES in trials.columns
             else pd.Series(math.nan, index=trials.index))
    return trials.assign(label_seconds_per_tile=per_tile, label_hours=per_tile * tiles / 3600.0)


def one_sided_p(differences: np.ndarray, delta: float, alternative: str) -> float:
    """p-value of the one-sided one-sample t-test of mean(differences) against ``delta``
    (``alternative``: ``less`` or ``greater``); NaN below 2 values; sd 0: 0 or 1 exactly."""
    if len(differences) < 2:
        return math.nan
    if np.ptp(differences) == 0:
        holds = differences[0] < delta if alternative == "less" else differences[0] > delta
        return 0.0 if holds else 1.0
    return float(stats.ttest_1samp(differences, delta, alternative=alternative).pvalue)


def seeds_needed(sd: float, gap: float, alpha: float, power: float = POWER) -> float:
    """Smallest number of paired seeds with which a one-sided t-test at level ``alpha`` tells a
    mean difference ``gap`` away from the margin, with ``power``, for paired sd ``sd``
    (``t_{1-alpha,n-1} + t_{power,n-1} <= gap * sqrt(n) / sd``); inf when ``gap`` is 0 or
    beyond :data:`MAX_SEEDS_ESTIMATE` seeds, NaN when ``sd`` is unknown."""
    if not sd > 0:
        return math.nan if math.isnan(sd) else 2.0
    for n in range(2, MAX_SEEDS_ESTIMATE + 1):
        need = stats.t.ppf(1 - alpha, n - 1) + stats.t.ppf(power, n - 1)
        if abs(gap) * math.sqrt(n) / sd >= need:
            return float(n)
    return math.inf


@dataclass(frozen=True)
class LabellingVerdict:
    """The answer: ``table`` ranks the labellings by cost (see :func:`labelling_verdict`),
    ``cheapest`` is the cheapest adequate labelling's point count (0 = dense; None without
    data), ``resolved`` whether every cheaper labelling was shown worse by more than delta,
    ``text`` says so in words."""

    table: pd.DataFrame
    cheapest: float | None
    resolved: bool
    text: str


def _groups(trials: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The trials grouped by the other varying config columns, each group with its label."""
    others = [c for c in varying_columns(trials) if c not in ("points", "seed")]
    return [(config_label(values, others) if others else "", group)
            for values, group in sorted_groups(trials, others)]


def _labellings(group: pd.DataFrame) -> int:
    return group["points"].map(norm_value).nunique()


def _labelling_group(trials: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The group of the other varying config columns with the most labellings (ties: the one
    listed first), and its label."""
    return max(_groups(trials), key=lambda g: _labellings(g[1]))


def labelling_groups(trials: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Every group of trials that share the other varying config values and hold two or more
    labellings, with its label (``"budget_hours=2"``: a fixed-budget study has one per
    budget), in sorted order; each can be given to :func:`labelling_verdict` and
    :func:`key_comparisons` on its own."""
    if "points" not in trials.columns:
        return []
    return [(label, group) for label, group in _groups(unique_trials(trials))
            if _labellings(group) >= 2]


def _baseline_means(trials: pd.DataFrame) -> dict[str, float]:
    """Mean of each baseline over the headline trials (NaN when not recorded)."""
    done = trials[headline_mask(trials)] if len(trials) else trials
    return {name: float(pd.to_numeric(done[column], errors="coerce").mean())
            if column in done.columns else math.nan
            for name, column in BASELINE_MEANS.items()}


def _cost_rows(group: pd.DataFrame, table: pd.DataFrame, model: CostModel) -> pd.DataFrame:
    priced = with_label_costs(group, model).assign(_p=group["points"].map(norm_value))
    rows = []
    for points in table.columns:
        mine = priced[priced["_p"] == points]
        tiles = pd.to_numeric(mine[TRAIN_TILES], errors="coerce") if TRAIN_TILES in mine \
            else pd.Series(dtype=float)
        summary = mean_ci(table[points])
        rows.append({
            "labelling": labelling_name(points), "points": points,
            "label_seconds_per_tile": model.seconds_per_tile(points),
            TRAIN_TILES: float(tiles.median()) if tiles.notna().any() else math.nan,
            "label_hours": float(mine["label_hours"].median()),
            "n_seeds": summary["n"], "mean": summary["mean"], "ci_lo": summary["ci_lo"],
            "ci_hi": summary["ci_hi"], **_baseline_means(mine),
        })
    out = pd.DataFrame(rows)
    cost = out["label_hours"].where(out["label_hours"].notna(), out["label_seconds_per_tile"])
    return out.assign(sort_cost=cost).sort_values(["sort_cost", "points"]).reset_index(drop=True)


def _compare(rows: pd.DataFrame, table: pd.DataFrame, delta: float) -> pd.DataFrame:
    """Adds the paired difference to the best and the two one-sided tests (Holm-adjusted)."""
    best = rows.loc[rows["mean"].idxmax()]
    columns = {k: [] for k in ("diff_mean", "diff_sd", "diff_ci_lo", "diff_ci_hi", "n_pairs",
                               "p_within", "p_beyond")}
    for row in rows.itertuples():
        diff = (table[best["points"]] - table[row.points]).dropna().to_numpy(float)
        summary = mean_ci(diff)
        cheaper = row.sort_cost < best["sort_cost"]
        columns["diff_mean"].append(summary["mean"])
        columns["diff_sd"].append(summary["sd"])
        columns["diff_ci_lo"].append(summary["ci_lo"])
        columns["diff_ci_hi"].append(summary["ci_hi"])
        columns["n_pairs"].append(summary["n"])
        columns["p_within"].append(one_sided_p(diff, delta, "less") if cheaper else math.nan)
        columns["p_beyond"].append(one_sided_p(diff, delta, "greater") if cheaper else math.nan)
    rows = rows.assign(**columns)
    adjusted = holm([*rows["p_within"], *rows["p_beyond"]])
    rows["p_within_holm"] = adjusted[:len(rows)]
    rows["p_beyond_holm"] = adjusted[len(rows):]
    rows["status"] = [
        BEST if p == best["points"] else WITHIN if w < ALPHA else BEYOND if b < ALPHA
        else OPEN if c < best["sort_cost"] else "costs more than the best"
        for p, w, b, c in zip(rows["points"], rows["p_within_holm"], rows["p_beyond_holm"],
                              rows["sort_cost"], strict=True)
    ]
    return rows


def _open_note(row, delta: float, family: int) -> str:
    need = seeds_needed(row.diff_sd, delta - row.diff_mean, ALPHA / max(family, 1))
    if math.isnan(need):
        more = "needs at least 2 paired seeds"
    elif math.isinf(need):
        more = f"its mean difference sits at the margin ({row.diff_mean:+.3f}); more seeds " \
               "will hardly tell"
    else:
        more = f"about {int(need)} paired seeds would likely resolve it (now {row.n_pairs})"
    return f"{row.labelling}: {row.diff_mean:+.3f} below the best; {more}"


def labelling_verdict(trials: pd.DataFrame, model: CostModel | None = None, *,
                      delta: float = DEFAULT_DELTA,
                      metric: str = HEADLINE_METRIC) -> LabellingVerdict:
    """Rank the labellings by cost and name the cheapest whose ``metric`` is within ``delta``
    of the best (module docstring). ``table`` columns: ``labelling``, ``points``,
    ``label_seconds_per_tile``, ``train_tiles``, ``label_hours``, ``n_seeds``, ``mean``,
    ``ci_lo``, ``ci_hi`` (95% over seeds), ``colour_table_mean`` and ``all_forest_mean`` (the
    baselines over the same trials; NaN if not recorded), ``diff_mean`` ... ``diff_ci_hi`` and
    ``n_pairs`` (best minus this labelling, paired by seed), ``p_within``/``p_beyond`` and
    their Holm adjustments, ``status``."""
    model = model or CostModel()
    if not delta > 0:
        raise ConfigError(f"invalid --delta {delta!r}: expected a positive mIoU difference")
    if "points" not in trials.columns or "seed" not in trials.columns or metric not in trials:
        return LabellingVerdict(pd.DataFrame(), None, False,
                                f"no labellings to compare (needs points, seed and {metric})")
    label, group = _labelling_group(unique_trials(trials))
    table = by_seed(group, "points", metric)
    if table.empty or table.notna().sum().max() == 0:
        return LabellingVerdict(pd.DataFrame(), None, False, "no completed trials to compare")
    rows = _compare(_cost_rows(group, table, model), table, delta)
    within = rows[rows["status"].isin([BEST, WITHIN])]
    chosen = within.iloc[0]
    cheaper_open = rows[(rows["sort_cost"] < chosen["sort_cost"]) & (rows["status"] == OPEN)]
    where = f" ({label})" if label else ""
    best = rows[rows["status"] == BEST].iloc[0]
    head = (f"cheapest labelling within {delta:g} {metric} of the best ({best['labelling']}, "
            f"{best['mean']:.3f}){where}: {chosen['labelling']}, {chosen['mean']:.3f} "
            f"[{chosen['ci_lo']:.3f}, {chosen['ci_hi']:.3f}], "
            f"{_hours_text(chosen)}")
    family = int(rows["p_within"].notna().sum() * 2)
    if cheaper_open.empty:
        text = head + " (resolved: every cheaper labelling is worse by more than delta, " \
               "Holm-adjusted one-sided paired t-tests)" if len(rows) > 1 else head
        resolved = True
    else:
        notes = "; ".join(_open_note(r, delta, family) for r in cheaper_open.itertuples())
        text = (f"not resolved: the seeds run do not tell whether a cheaper labelling is within "
                f"{delta:g} of the best. So far {head}. Open: {notes}")
        resolved = False
    return LabellingVerdict(rows.drop(columns="sort_cost"), float(chosen["points"]), resolved, text)


def _hours_text(row) -> str:
    if pd.notna(row["label_hours"]):
        return f"{row['label_hours']:.1f} labelling hours ({int(row[TRAIN_TILES])} tiles)"
    return f"{row['label_seconds_per_tile']:.0f} s of labelling per tile"


@dataclass(frozen=True)
class KeyComparison:
    """One comparison the answer rests on: ``question`` (``differs`` or ``within delta``)
    asked of labelling ``b`` against ``a`` (point counts, 0 = dense), whether the seeds run
    answer it, and on how many paired seeds."""

    a: float
    b: float
    question: str
    resolved: bool
    n_pairs: int

    def describe(self) -> str:
        state = "resolved" if self.resolved else "not resolved"
        seeds = f"{self.n_pairs} paired seed{'s' if self.n_pairs != 1 else ''}"
        return (f"{labelling_name(self.b)} {self.question} {labelling_name(self.a)}: {state} "
                f"at {seeds}")


def key_comparisons(trials: pd.DataFrame, model: CostModel | None = None, *,
                    delta: float = DEFAULT_DELTA,
                    metric: str = HEADLINE_METRIC) -> list[KeyComparison]:
    """The comparisons the answer rests on: each point count against dense (``differs``:
    paired two-sided t-test, Holm, resolved when ``p_holm < 0.05``), and each labelling cheaper
    than the cheapest adequate one against it (``within delta``: resolved when shown worse by
    more than ``delta``, :func:`labelling_verdict`)."""
    out = []
    diffs = paired_differences(trials, metric, factor="points")
    for row in diffs[diffs["a"].map(norm_value) == DENSE_POINTS].itertuples():
        out.append(KeyComparison(DENSE_POINTS, norm_value(row.b), "differs from",
                                 bool(row.p_holm < ALPHA), int(row.n_pairs)))
    verdict = labelling_verdict(trials, model, delta=delta, metric=metric)
    if verdict.cheapest is not None:
        table = verdict.table
        cost = table["label_hours"].fillna(table["label_seconds_per_tile"])
        chosen_cost = cost[table["points"] == verdict.cheapest].iloc[0]
        for row in table[cost < chosen_cost].itertuples():
            out.append(KeyComparison(verdict.cheapest, row.points,
                                     f"within {delta:g} of", row.status != OPEN,
                                     int(row.n_pairs)))
    return out
