"""Search methods compared at an equal trial-epoch budget (grid per lr schedule, PBT, Optuna).

Conventions:

- The *kind* of a trial is its driver, results.csv's ``driver`` column (``grid``, ``pbt``,
  ``optuna``, or the name a Study gave; see :func:`forest_seg.analysis.load.trial_drivers`
  for files written before that column).
- A *method* is (kind, ``lr_schedule``). A missing ``lr_schedule`` (a directory written before
  the field existed) counts as ``constant``, the only schedule there was. Its label is the kind,
  plus `` lr_schedule=<s>`` when that kind's trials use more than one schedule
  (``grid lr_schedule=constant``, ``grid lr_schedule=cosine``, ``pbt``).
- *Trial-epochs* of a method: the sum of the epochs its trials reached. The common budget ``B``
  is the smallest positive total among the methods compared.
- *Replay*: a method's trials are taken in launch order (experiments in the order given, then
  ``trial_id``, which Ray assigns in launch order: ``<run>_00000``, ``<run>_00001``, ...) and
  each trial's epochs are counted in full before the next trial's, until ``B`` trial-epochs.
  This is an approximation: trials run concurrently (a grid several at once; a PBT population
  all at once, its later epochs starting from other members' checkpoints), so the first ``B``
  trial-epochs in wall-clock time interleave trials. The replay says what running the same
  trials one after another would have shown after ``B`` trial-epochs. Each history row is one
  trial-epoch carrying its ``val_miou``; a trial without history rows counts its ``epochs``,
  with its ``best_val_miou`` known only at its last one.
- A method's *best configuration* is the one with the highest mean ``metric`` over its
  COMPLETED seeds (the summary's headline, which never mixes epoch counts); when none of its
  configurations has a COMPLETED trial (every trial stopped early), the highest mean at the
  common epoch of its trials instead. ``best_at_epoch`` says which epoch the mean is at.
- *Comparable*: besides ``lr``, ``lr_schedule``, ``warmup_epochs`` and ``seed`` (what methods
  choose), and the execution-only fields (``TrainConfig.execution_fields()``: ``device``,
  ``num_workers``, ``threads``, ``checkpoint_every``, ``checkpoint_minutes``), every config
  column must take the same set of values in every method; otherwise both sides are flagged
  ``not comparable: differs in <columns>``.
"""

from __future__ import annotations

import math

import pandas as pd

from forest_seg.analysis.load import (
    config_columns,
    format_value,
    norm_value,
    trial_drivers,
    trial_keys,
)
from forest_seg.analysis.stats import HEADLINE_METRIC
from forest_seg.analysis.summary import AT_COMMON, summarize
from forest_seg.config import TrainConfig

DEFAULT_SCHEDULE = "constant"
METHOD_CHOICES = ("lr", "lr_schedule", "warmup_epochs", "seed")
EXECUTION_ONLY = TrainConfig.execution_fields()
METHOD_COLUMNS = [
    "method", "kind", "lr_schedule", "experiments", "n_trials", "seeds", "trial_epochs",
    "budget", "budget_used", "budget_trials", "best_in_budget", "best_in_budget_trial",
    "best_config", "best_mean", "best_ci_lo", "best_ci_hi", "best_n_seeds", "best_at_epoch",
    "comparable",
]


def _kinds_and_schedules(trials: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    kinds = trial_drivers(trials)
    if "lr_schedule" in trials.columns:
        schedules = trials["lr_schedule"].map(norm_value)
    else:
        schedules = pd.Series(None, index=trials.index, dtype=object)
    schedules = schedules.map(lambda v: DEFAULT_SCHEDULE if v is None else str(v))
    return kinds.astype(str), schedules.astype(str)


def method_labels(trials: pd.DataFrame) -> pd.Series:
    """The method label of every trial (see the module docstring), indexed like ``trials``."""
    kinds, schedules = _kinds_and_schedules(trials)
    several = {k for k in kinds.unique() if schedules[kinds == k].nunique() > 1}
    return pd.Series([f"{k} lr_schedule={s}" if k in several else k
                      for k, s in zip(kinds, schedules, strict=True)],
                     index=trials.index, dtype=object)


def launch_order(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` sorted in launch order: experiments as first seen, then ``trial_id``."""
    if "experiment" not in trials.columns:
        return trials.sort_values("trial_id", kind="stable")
    rank = {e: i for i, e in enumerate(pd.unique(trials["experiment"]))}
    return (trials.assign(_rank=trials["experiment"].map(rank))
            .sort_values(["_rank", "trial_id"], kind="stable").drop(columns="_rank"))


def _trial_name(row: pd.Series, with_experiment: bool) -> str:
    return f"{row['experiment']}/{row['trial_id']}" if with_experiment else str(row["trial_id"])


def budget_replay(trials: pd.DataFrame, epochs: pd.DataFrame | None, budget: int) -> dict:
    """Replay ``trials`` in launch order for ``budget`` trial-epochs (module docstring).

    Returns ``used`` (trial-epochs counted, at most ``budget``), ``trials`` (trials begun),
    ``best`` (highest val mIoU of any counted epoch; NaN when none) and ``best_trial`` (its
    trial, ``experiment/trial_id`` when the trials span several experiments)."""
    keys = trial_keys(trials)
    curves: dict[tuple, list[float]] = {}
    if epochs is not None and not epochs.empty and "val_miou" in epochs.columns and all(
            k in epochs.columns for k in keys):
        for key, rows in epochs.sort_values("epoch", kind="stable").groupby(keys, sort=False):
            curves[tuple(map(str, key))] = pd.to_numeric(rows["val_miou"],
                                                         errors="coerce").tolist()
    several = "experiment" in trials.columns and trials["experiment"].nunique() > 1
    used, begun, best, best_trial = 0, 0, math.nan, None
    for _, row in launch_order(trials).iterrows():
        if used >= budget:
            break
        values = curves.get(tuple(str(row[k]) for k in keys))
        if not values:  # no history: the trial's best is known at its last epoch only
            n = int(row["epochs"])
            values = [math.nan] * (n - 1) + [float(row["best_val_miou"])] if n > 0 else []
        if not values:
            continue
        begun += 1
        counted = values[:budget - used]
        used += len(counted)
        for value in counted:
            if not math.isnan(value) and not value <= best:
                best, best_trial = value, _trial_name(row, several)
    return {"used": used, "trials": begun, "best": best, "best_trial": best_trial}


def config_differences(trials: pd.DataFrame, labels: pd.Series | None = None
                       ) -> dict[str, dict[str, list]]:
    """Config columns (other than what methods choose, see the module docstring) whose value
    sets differ between methods: ``{column: {method: sorted values}}``."""
    labels = method_labels(trials) if labels is None else labels
    cols = [c for c in config_columns(trials) if c not in METHOD_CHOICES + EXECUTION_ONLY]
    out: dict[str, dict[str, list]] = {}
    for col in cols:
        sets = {m: frozenset(trials.loc[labels == m, col].map(norm_value))
                for m in pd.unique(labels)}
        if len(set(sets.values())) > 1:
            out[col] = {m: sorted(s, key=lambda v: (v is None, str(type(v)), v if v is not None
                                                   else 0)) for m, s in sets.items()}
    return out


def _order(labels: pd.Series, trials: pd.DataFrame) -> list[str]:
    kinds, schedules = _kinds_and_schedules(trials)
    keys = {m: (kinds[labels == m].iloc[0], schedules[labels == m].iloc[0])
            for m in pd.unique(labels)}
    return sorted(keys, key=keys.get)


def best_of_method(group: pd.DataFrame, epochs: pd.DataFrame | None, metric: str) -> dict:
    """The best configuration of one method's trials (module docstring): ``best_config``,
    ``best_mean``, ``best_ci_lo``, ``best_ci_hi``, ``best_n_seeds``, ``best_at_epoch``."""
    summary = summarize(group, metric, metrics=[metric], epochs=epochs)
    for stem, seeds, epoch in ((metric, "n_seeds", "at_epoch"),
                               (f"{metric}_{AT_COMMON}", "n_seeds_at_common", "common_epoch")):
        means = summary.get(f"{stem}_mean", pd.Series(dtype=float))
        if means.notna().any():
            best = summary.loc[means.idxmax()]
            return {"best_config": best["config"], "best_mean": float(best[f"{stem}_mean"]),
                    "best_ci_lo": float(best[f"{stem}_ci_lo"]),
                    "best_ci_hi": float(best[f"{stem}_ci_hi"]),
                    "best_n_seeds": int(best[seeds]), "best_at_epoch": best[epoch]}
    return {"best_config": None, "best_mean": math.nan, "best_ci_lo": math.nan,
            "best_ci_hi": math.nan, "best_n_seeds": 0, "best_at_epoch": math.nan}


def compare_methods(trials: pd.DataFrame, epochs: pd.DataFrame | None = None,
                    metric: str = HEADLINE_METRIC) -> pd.DataFrame:
    """A row per method (module docstring) compared at the common trial-epoch budget ``B``.

    Columns: ``method``, ``kind``, ``lr_schedule``, ``experiments`` (names), ``n_trials``,
    ``seeds``, ``trial_epochs`` (spent), ``budget`` (``B``), ``budget_used``, ``budget_trials``
    and ``best_in_budget`` / ``best_in_budget_trial`` (the replay of :func:`budget_replay`:
    the best single-trial val mIoU seen within ``B``), then over the whole method the best
    configuration by mean ``metric`` over seeds (:func:`best_of_method`): ``best_config``,
    ``best_mean``, ``best_ci_lo``, ``best_ci_hi`` (95% t-interval), ``best_n_seeds``,
    ``best_at_epoch``; last ``comparable`` (``yes`` or ``not comparable: differs in X``).
    Rows are ordered by kind, then schedule.
    """
    if trials.empty:
        return pd.DataFrame(columns=METHOD_COLUMNS)
    labels = method_labels(trials)
    kinds, schedules = _kinds_and_schedules(trials)
    totals = {m: int(trials.loc[labels == m, "epochs"].sum()) for m in pd.unique(labels)}
    positive = [t for t in totals.values() if t > 0]
    budget = min(positive) if positive else 0
    differences = config_differences(trials, labels)
    rows = []
    for method in _order(labels, trials):
        group = trials[labels == method]
        replay = budget_replay(group, epochs, budget)
        seeds = (sorted({norm_value(s) for s in group["seed"]} - {None})
                 if "seed" in group.columns else [])
        differs = [c for c, sets in differences.items()
                   if any(sets[method] != other for m, other in sets.items() if m != method)]
        rows.append({
            "method": method, "kind": kinds[labels == method].iloc[0],
            "lr_schedule": schedules[labels == method].iloc[0],
            "experiments": ", ".join(pd.unique(group["experiment"]))
            if "experiment" in group.columns else "",
            "n_trials": len(group), "seeds": ", ".join(map(format_value, seeds)) or "n/a",
            "trial_epochs": totals[method], "budget": budget, "budget_used": replay["used"],
            "budget_trials": replay["trials"], "best_in_budget": replay["best"],
            "best_in_budget_trial": replay["best_trial"],
            **best_of_method(group, epochs, metric),
            "comparable": f"not comparable: differs in {', '.join(differs)}" if differs
            else "yes",
        })
    return pd.DataFrame(rows, columns=METHOD_COLUMNS)


def methods_for_report(methods: pd.DataFrame) -> pd.DataFrame:
    """The compact report table of :func:`compare_methods`."""
    def interval(r: pd.Series) -> str:
        if math.isnan(r["best_mean"]):
            return "n/a"
        at = f"epoch {r['best_at_epoch']:g}" if pd.notna(r["best_at_epoch"]) else "epoch n/a"
        if math.isnan(r["best_ci_lo"]):
            return f"{r['best_mean']:.4f} (1 seed: inconclusive; {at})"
        return (f"{r['best_mean']:.4f} ± {(r['best_ci_hi'] - r['best_ci_lo']) / 2:.4f} "
                f"({r['best_n_seeds']} seeds, {at})")

    return pd.DataFrame({
        "method": methods["method"], "trials": methods["n_trials"], "seeds": methods["seeds"],
        "trial-epochs": methods["trial_epochs"],
        "best epoch val mIoU within B (optimistic: max over trials)": methods["best_in_budget"],
        "trial": methods["best_in_budget_trial"].fillna("n/a"),
        "best config (whole method)": methods["best_config"].fillna("n/a"),
        "its mean (95% CI)": [interval(r) for _, r in methods.iterrows()],
        "comparable": methods["comparable"],
    })


def method_notes(methods: pd.DataFrame, trials: pd.DataFrame) -> list[str]:
    """Plain-language lines on what the method table shows and does not show."""
    budget = int(methods["budget"].iloc[0]) if len(methods) else 0
    notes = [
        f"Methods at B = {budget} trial-epochs: each method's trials are replayed one after "
        "another in launch order (trial_id), so 'best within B' is what a sequential run of "
        "the same trials had seen after B trial-epochs; real trials ran concurrently, so this "
        "approximates the wall-clock order. It is a maximum over single trials, which grows "
        "with the number of trials and includes seed luck: compare methods on the best "
        "configuration's interval, not on it alone."]
    for col, sets in config_differences(trials).items():
        values = "; ".join(f"{m}: {', '.join(map(format_value, v))}" for m, v in sets.items())
        notes.append(f"The methods differ in `{col}` ({values}): their numbers do not compare "
                     "the methods alone.")
    if (methods["kind"] == "pbt").any():
        notes.append("PBT's `lr` is each trial's final lr (lr_paths.png shows the paths), so a "
                     "PBT 'configuration' is in effect one trial: its best configuration is "
                     "the best trial, and any interval is not over independent seeds.")
    return notes

