"""Markdown tables and the ``report.md`` of a sweep analysis (no ``tabulate`` needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from forest_seg.analysis.load import format_value, trial_keys, varying_columns
from forest_seg.analysis.plots import Plot, make_plots
from forest_seg.analysis.stats import (
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


def _notes(summary: pd.DataFrame, diffs: pd.DataFrame, metric: str) -> list[str]:
    """Plain-language lines on what the tables show and do not show."""
    notes = []
    single = summary[summary["inconclusive"]]
    if len(single):
        names = "; ".join(single["config"].head(5)) + (" ..." if len(single) > 5 else "")
        notes.append(
            f"{len(single)} configuration(s) have a single seed ({names}). One run cannot be "
            "told apart from seed-to-seed noise (two identical runs can differ by ~0.015 mIoU): "
            "their numbers show what one run gave, not what the configuration gives. Run more "
            "seeds before ranking them.")
    for _, d in diffs.iterrows():
        where = f" ({d['group']})" if d["group"] else ""
        pair = f"points={format_value(d['a'])} vs points={format_value(d['b'])}{where}"
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
    notes.append("Intervals cover seed-to-seed variation on this data and split only; they do "
                 "not say how the results carry over to other datasets, splits or training "
                 "lengths.")
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
    """Everything :func:`analyze` computed; ``markdown`` is the report text."""

    summary: pd.DataFrame
    differences: pd.DataFrame
    instability: pd.DataFrame
    status: pd.DataFrame
    plots: list[Plot] = field(default_factory=list)
    comparison: dict | None = None
    notes: list[str] = field(default_factory=list)
    markdown: str = ""
    sections: list[tuple[str, str]] = field(default_factory=list)


def analyze(trials: pd.DataFrame, epochs: pd.DataFrame | None, out_dir: str | Path,
            metric: str = "best_val_miou", comparison: dict | None = None,
            title: str = "Sweep analysis") -> Analysis:
    """Compute the tables, write the PNGs and ``report.md`` into ``out_dir``.

    ``comparison`` is the dict of :func:`~forest_seg.analysis.stats.compare_early_stopping`
    (optional). Returns an :class:`Analysis`; ``sections`` holds (title, markdown) pairs in
    report order, for printing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(trials, metric=metric)
    diffs = paired_differences(trials, metric=metric)
    instability = lr_instability(trials, epochs)
    status = status_counts(trials)
    plots = make_plots(trials, epochs, out, metric)
    notes = _notes(summary, diffs, metric)
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
        shown = diffs[[c for c in diffs.columns if c != "group"]]
        sections.append((f"Paired differences between point counts ({metric}, a - b, paired "
                         "by seed)", to_markdown(shown, formats=config_formats(shown, "n_pairs"))))
    else:
        reason = ("`points` takes a single value" if "points" in trials.columns
                  and "points" not in varying_columns(trials) else "no point counts to compare")
        sections.append(("Paired differences between point counts", f"Skipped: {reason}."))
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
              "present at both point counts.", ""]
    body = [f"## {name}\n\n{text}\n" for name, text in sections]
    markdown = "\n".join(header + body)
    (out / REPORT_FILE).write_text(markdown, encoding="utf-8")
    return Analysis(summary, diffs, instability, status, plots, comparison, notes, markdown,
                    sections)
