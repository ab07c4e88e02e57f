"""Markdown tables and the ``report.md`` of a sweep analysis (no ``tabulate`` needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from forest_seg.analysis.load import format_value, norm_value, trial_keys, varying_columns
from forest_seg.analysis.methods import (
    compare_methods,
    method_labels,
    method_notes,
    methods_for_report,
)
from forest_seg.analysis.plots import Plot, make_plots
from forest_seg.analysis.stats import (
    DENSE_POINTS,
    METRICS,
    comparison_table,
    lr_instability,
    paired_differences,
    status_counts,
    summarize,
)

REPORT_FILE = "report.md"


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


def config_formats(frame: pd.DataFrame, upto: str) -> dict[str, str]:
    """``"g"`` for the float columns before ``upto`` (config values: an lr of 1e-05 must not
    print as 0.0000)."""
    cols = list(frame.columns)
    head = cols[:cols.index(upto)] if upto in cols else []
    return {c: "g" for c in head if pd.api.types.is_float_dtype(frame[c])}


def summary_for_report(summary: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The compact table of :func:`~forest_seg.analysis.stats.summarize`: config columns,
    seeds, failed trials, ``mean ± 95% CI half-width`` per metric and the sd of the first."""
    fixed = {"config", "n_trials", "n_seeds", "n_failed", "inconclusive"}
    cfg = [c for c in summary.columns
           if c not in fixed and not any(c.startswith(f"{m}_") for m in METRICS)]
    out = summary[cfg or ["config"]].copy()
    out["seeds"] = summary["n_seeds"]
    out["failed"] = summary["n_failed"]
    for i, m in enumerate(m for m in metrics if f"{m}_mean" in summary.columns):
        out[f"{m} (95% CI)"] = [_interval(r[f"{m}_mean"], r[f"{m}_ci_lo"], r[f"{m}_ci_hi"])
                                for _, r in summary.iterrows()]
        if i == 0:
            out[f"{m} sd"] = summary[f"{m}_sd"]
    out["note"] = ["inconclusive (1 seed)" if x else "" for x in summary["inconclusive"]]
    return out


def _notes(summary: pd.DataFrame, diffs: dict[str, pd.DataFrame], metric: str) -> list[str]:
    """Plain-language lines on what the tables show and do not show; ``diffs`` maps a factor
    (``points``, ``point_strategy``) to its paired differences."""
    notes = []
    single = summary[summary["inconclusive"]]
    if len(single):
        names = "; ".join(single["config"].head(5)) + (" ..." if len(single) > 5 else "")
        notes.append(
            f"{len(single)} configuration(s) have a single seed ({names}). One run cannot be "
            "told apart from seed-to-seed noise (two identical runs can differ by ~0.015 mIoU): "
            "their numbers show what one run gave, not what the configuration gives. Run more "
            "seeds before ranking them.")
    for factor, frame in diffs.items():
        notes.extend(_pair_notes(frame, factor, metric))
    notes.append("Intervals cover seed-to-seed variation on this data and split only; they do "
                 "not say how the results carry over to other datasets, splits or training "
                 "lengths.")
    return notes


def _pair_notes(diffs: pd.DataFrame, factor: str, metric: str) -> list[str]:
    notes = []
    for _, d in diffs.iterrows():
        where = f" ({d['group']})" if d["group"] else ""
        pair = f"{factor}={format_value(d['a'])} vs {factor}={format_value(d['b'])}{where}"
        if d["verdict"] == "within noise":
            notes.append(
                f"{pair}: difference {d['mean_diff']:+.4f} in {metric}, 95% CI "
                f"[{d['ci_lo']:+.4f}, {d['ci_hi']:+.4f}] includes 0 over {d['n_pairs']} "
                "paired seeds. This does not show that either is better; it shows the "
                "difference is smaller than what these seeds can resolve.")
        elif d["verdict"].startswith("inconclusive"):
            notes.append(f"{pair}: only one seed in common, so no interval can be given; "
                         "the difference is inconclusive.")
        elif d["verdict"].endswith("better"):
            notes.append(
                f"{pair}: {d['verdict']} (difference {d['mean_diff']:+.4f}, 95% CI "
                f"[{d['ci_lo']:+.4f}, {d['ci_hi']:+.4f}], {d['n_pairs']} paired seeds).")
    return notes


def _unfinished(trials: pd.DataFrame, epochs: pd.DataFrame | None) -> int:
    """Trials with history rows but no results row."""
    if epochs is None or epochs.empty:
        return 0
    keys = [k for k in trial_keys(trials) if k in epochs.columns]
    seen = epochs[keys].drop_duplicates().merge(trials[keys], how="left", indicator=True)
    return int((seen["_merge"] == "left_only").sum())


@dataclass
class Analysis:
    """Everything :func:`analyze` computed; ``markdown`` is the report text.

    ``strategy_differences`` is None when ``point_strategy`` does not vary among the point
    trials; ``methods`` is None when the trials hold a single method (see
    :mod:`~forest_seg.analysis.methods`)."""

    summary: pd.DataFrame
    differences: pd.DataFrame
    instability: pd.DataFrame
    status: pd.DataFrame
    plots: list[Plot] = field(default_factory=list)
    comparison: dict | None = None
    notes: list[str] = field(default_factory=list)
    markdown: str = ""
    sections: list[tuple[str, str]] = field(default_factory=list)
    strategy_differences: pd.DataFrame | None = None
    methods: pd.DataFrame | None = None


def _strategies_vary(trials: pd.DataFrame) -> bool:
    if "point_strategy" not in trials.columns:
        return False
    pointed = trials
    if "points" in trials.columns:
        pointed = trials[trials["points"].map(norm_value) != DENSE_POINTS]
    return "point_strategy" in varying_columns(pointed, ["point_strategy"])


def _diff_table(diffs: pd.DataFrame) -> str:
    shown = diffs[[c for c in diffs.columns if c != "group"]]
    return to_markdown(shown, formats=config_formats(shown, "n_pairs"))


def analyze(trials: pd.DataFrame, epochs: pd.DataFrame | None, out_dir: str | Path,
            metric: str = "best_val_miou", comparison: dict | None = None,
            title: str = "Sweep analysis") -> Analysis:
    """Compute the tables, write the PNGs and ``report.md`` into ``out_dir``.

    ``comparison`` is the dict of :func:`~forest_seg.analysis.stats.compare_early_stopping`
    (optional). The point-strategy differences appear when ``point_strategy`` varies among
    trials with points; the method comparison at equal trial-epoch budget when the trials hold
    several methods (experiment kinds from the directory names, or lr schedules). Returns an
    :class:`Analysis`; ``sections`` holds (title, markdown) pairs in report order, for printing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(trials, metric=metric)
    diffs = paired_differences(trials, metric=metric)
    strategies = (paired_differences(trials, metric=metric, factor="point_strategy",
                                     pairs="all") if _strategies_vary(trials) else None)
    methods = (compare_methods(trials, epochs, metric) if method_labels(trials).nunique() > 1
               else None)
    instability = lr_instability(trials, epochs)
    status = status_counts(trials)
    plots = make_plots(trials, epochs, out, metric)
    pairs = {"points": diffs}
    if strategies is not None:
        pairs["point_strategy"] = strategies
    notes = _notes(summary, pairs, metric)
    if methods is not None:
        notes[-1:-1] = method_notes(methods, trials)
    unfinished = _unfinished(trials, epochs)
    if unfinished:
        notes.insert(0, f"{unfinished} trial(s) have epochs in the history but no results row "
                        "(still running, or the sweep was interrupted); they are left out of "
                        "every table and plot.")
    metrics = [metric] + [m for m in ("val_miou", "best_val_iou", "val_iou") if m != metric]

    compact = summary_for_report(summary, metrics)
    sections = [
        ("Trials by status", to_markdown(status)),
        (f"Per configuration (mean ± 95% t-interval half-width over seeds; ranked by {metric})",
         to_markdown(compact, formats=config_formats(compact, "seeds"))),
    ]
    if len(diffs):
        sections.append((f"Paired differences between point counts ({metric}, a - b, paired "
                         "by seed)", _diff_table(diffs)))
    else:
        if "points" not in trials.columns:
            reason = "no `points` column"
        elif "points" not in varying_columns(trials):
            reason = "`points` takes a single value"
        else:
            reason = "no group of the other varying config columns holds two point counts"
        sections.append(("Paired differences between point counts", f"Skipped: {reason}."))
    if strategies is not None:
        name = (f"Point strategies at equal point counts (paired by seed; {metric}, a - b; "
                "dense points=0 trials left out)")
        sections.append((name, _diff_table(strategies) if len(strategies) else
                         "No pairs: no group of the other varying columns holds two "
                         "strategies."))
    if methods is not None:
        budget = int(methods["budget"].iloc[0])
        sections.append((f"Methods at equal trial-epoch budget (B = {budget} trial-epochs; "
                         f"best config by mean {metric} over seeds)",
                         to_markdown(methods_for_report(methods))))
    if len(instability):
        sections.append(("Learning-rate instability (volatility: mean |change| of val loss "
                         "between epochs; seed_sd: sd of final val mIoU across seeds; "
                         "best_last_gap: best - final val mIoU)",
                         to_markdown(instability, ".4f", formats={"lr": "g"})))
    if comparison is not None:
        sections.append(("Early stopping: ASHA vs FIFO", to_markdown(comparison_table(comparison))))
    plot_lines = [f"![{p.name}]({p.path.name})" if p.path is not None
                  else f"- `{p.name}.png` skipped: {p.note}." for p in plots]
    sections.append(("Plots", "\n\n".join(plot_lines)))
    sections.append(("What this shows / does not show", "\n".join(f"- {n}" for n in notes)))

    experiments = ", ".join(sorted(trials["experiment"].unique())) if (
        "experiment" in trials.columns) else ""
    header = [f"# {title}", "", f"Experiments: {experiments or 'n/a'}; {len(trials)} trials; "
              f"metric: `{metric}`.", "",
              "Intervals are 95% t-intervals over seeds (t quantile of the next smaller "
              "tabulated df, so never narrower than exact). Paired differences use the seeds "
              "present at both values compared.", ""]
    body = [f"## {name}\n\n{text}\n" for name, text in sections]
    markdown = "\n".join(header + body)
    (out / REPORT_FILE).write_text(markdown, encoding="utf-8")
    return Analysis(summary, diffs, instability, status, plots, comparison, notes, markdown,
                    sections, strategy_differences=strategies, methods=methods)
