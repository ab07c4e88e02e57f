"""Markdown tables (no ``tabulate`` needed) and the compact report tables of the summary."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from forest_seg.analysis.summary import (
    ALL_FOREST_BASELINE,
    AT_COMMON,
    COLOUR_BASELINE,
    GAIN,
    metric_label,
)


def _cell(value: object, floatfmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(frame: pd.DataFrame, floatfmt: str = ".4f", index: bool = False,
                formats: dict[str, str] | None = None) -> str:
    """A GitHub-flavoured markdown table of ``frame``; NaN shows as ``n/a``, bools as yes/no.

    Numeric columns are right-aligned. Floats are formatted with ``format(x, floatfmt)``, or
    with ``formats[column]`` for the columns it names (e.g. ``{"lr": "g"}``).
    """
    if index:
        frame = frame.reset_index()
    header = [str(c) for c in frame.columns]
    fmts = [(formats or {}).get(c, floatfmt) for c in frame.columns]
    body = [[_cell(v.item() if hasattr(v, "item") else v, f) for v, f in zip(row, fmts,
                                                                           strict=True)]
            for row in frame.itertuples(index=False, name=None)]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns]
    widths = [max([len(h), 3, *(len(r[i]) for r in body)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if num else c.ljust(w)
                  for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric, strict=True)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in body)])


def _interval(mean: float, lo: float, hi: float) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(lo):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {(hi - lo) / 2:.4f}"


def _bracket(mean: float, lo: float, hi: float) -> str:
    """``+0.0123 [-0.0100, +0.0346]`` (signed; the interval only when there is one)."""
    if math.isnan(mean):
        return "n/a"
    return f"{mean:+.4f}" + ("" if math.isnan(lo) else f" [{lo:+.4f}, {hi:+.4f}]")


def _intervals(summary: pd.DataFrame, stem: str) -> list[str]:
    return [_interval(r[f"{stem}_mean"], r[f"{stem}_ci_lo"], r[f"{stem}_ci_hi"])
            for _, r in summary.iterrows()]


def config_formats(frame: pd.DataFrame, upto: str) -> dict[str, str]:
    """``"g"`` for the float columns before ``upto`` (config values: an lr of 1e-05 must not
    print as 0.0000)."""
    cols = list(frame.columns)
    head = cols[:cols.index(upto)] if upto in cols else []
    return {c: "g" for c in head if pd.api.types.is_float_dtype(frame[c])}


def _config_part(summary: pd.DataFrame) -> pd.DataFrame:
    """The config columns of a :func:`summarize` frame (``config`` when none varies)."""
    cols = list(summary.columns)
    cfg = cols[1:cols.index("n_trials")] if "n_trials" in cols else []
    return summary[cfg or ["config"]].copy()


def summary_for_report(summary: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The compact table of :func:`~forest_seg.analysis.summary.summarize`: config columns,
    the seeds each mean rests on and their epoch, the trials left out (early stopped, diverged,
    error), ``mean ± 95% CI half-width`` per metric (labelled; best-epoch ones as optimistic)
    and the sd of the first; at an ASHA run's common epoch, the same over every seed."""
    out = _config_part(summary)
    out["seeds"] = summary["n_seeds"]
    out["epoch"] = summary["at_epoch"]
    out["early stopped"] = summary["n_early_stopped"]
    out["diverged"] = summary["n_diverged"]
    out["error"] = summary["n_error"]
    for i, m in enumerate(m for m in metrics if f"{m}_mean" in summary.columns):
        out[f"{metric_label(m)} (95% CI)"] = _intervals(summary, m)
        if i == 0:
            out[f"{metric_label(m)} sd"] = summary[f"{m}_sd"]
    if "common_epoch" in summary.columns:
        epoch = int(summary["common_epoch"].iloc[0])
        for m in (m for m in metrics if f"{m}_{AT_COMMON}_mean" in summary.columns):
            out[f"{metric_label(m)} at epoch {epoch}, every seed (95% CI)"] = _intervals(
                summary, f"{m}_{AT_COMMON}")
        out[f"seeds at epoch {epoch}"] = summary["n_seeds_at_common"]
    out["note"] = ["inconclusive (< 2 COMPLETED seeds)" if x else ""
                   for x in summary["inconclusive"]]
    return out


def baselines_for_report(summary: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """The Baselines table (config, seeds, network ``metric``, all-forest, colour table, gain
    over colour [95% CI]); None when the trials carry no baseline column."""
    present = [c for c in (ALL_FOREST_BASELINE, COLOUR_BASELINE)
               if f"{c}_mean" in summary.columns]
    if not present:
        return None
    out = _config_part(summary)
    out["seeds"] = summary["n_seeds"]
    out[f"network {metric_label(metric)}"] = _intervals(summary, metric)
    for column, name in ((ALL_FOREST_BASELINE, "all-forest"), (COLOUR_BASELINE, "colour table")):
        out[f"{name} mIoU"] = (_intervals(summary, column) if column in present
                               else ["not recorded"] * len(summary))
    out["gain over colour [95% CI]"] = (
        [_bracket(r[f"{GAIN}_mean"], r[f"{GAIN}_ci_lo"], r[f"{GAIN}_ci_hi"])
         for _, r in summary.iterrows()] if f"{GAIN}_mean" in summary.columns
        else ["n/a"] * len(summary))
    return out


def labelling_costs_for_report(table: pd.DataFrame) -> pd.DataFrame:
    """The labelling-cost ranking of :func:`~forest_seg.analysis.cost.labelling_verdict`:
    cost per tile and of the training set, the network's mean [95% CI], the colour table built
    from the same labels, the best's lead over it (paired), the Holm-adjusted one-sided
    p-values and the status."""
    return pd.DataFrame({
        "labelling": table["labelling"],
        "s per tile": table["label_seconds_per_tile"],
        "train tiles": table["train_tiles"],
        "labelling hours": table["label_hours"],
        "seeds": table["n_seeds"],
        "val mIoU (95% CI)": [_interval(r.mean, r.ci_lo, r.ci_hi) for r in table.itertuples()],
        "colour table mIoU": table["colour_table_mean"],
        "best - this (95% CI)": [_bracket(r.diff_mean, r.diff_ci_lo, r.diff_ci_hi)
                                 for r in table.itertuples()],
        "p within delta (Holm)": table["p_within_holm"],
        "p worse by > delta (Holm)": table["p_beyond_holm"],
        "status": table["status"],
    })
