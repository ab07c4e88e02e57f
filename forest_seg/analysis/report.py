"""The ``report.md`` of a sweep analysis: sections, notes and :func:`analyze`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from forest_seg.analysis.cost import (
    DEFAULT_DELTA,
    CostModel,
    LabellingVerdict,
    key_comparisons,
    labelling_groups,
    labelling_verdict,
)
from forest_seg.analysis.cost_plot import plot_miou_vs_label_cost
from forest_seg.analysis.load import (
    DUPLICATES_DROPPED,
    format_value,
    norm_value,
    trial_keys,
    varying_columns,
)
from forest_seg.analysis.methods import (
    compare_methods,
    method_labels,
    method_notes,
    methods_for_report,
)
from forest_seg.analysis.optuna_plots import optuna_plots
from forest_seg.analysis.pairs import NOT_RESOLVED, paired_differences
from forest_seg.analysis.plots import Plot, make_plots
from forest_seg.analysis.stats import (
    DENSE_POINTS,
    HEADLINE_METRIC,
    comparison_table,
    lr_instability,
    status_counts,
)
from forest_seg.analysis.summary import metric_label, summarize
from forest_seg.analysis.tables import (
    baselines_for_report,
    config_formats,
    labelling_costs_for_report,
    summary_for_report,
    to_markdown,
)
from forest_seg.cache import writable_dir

REPORT_FILE = "report.md"
# (factor, pairs, section name): paired-difference sections, each when its factor varies
FACTOR_SECTIONS = (
    ("points", "adjacent", "Paired differences between point counts"),
    ("point_strategy", "all", "Point strategies at equal point counts"),
    ("head", "all", "Heads"),
    ("encoder_stages", "adjacent", "Encoder stages"),
    ("lr", "all", "Learning rates"),
)
# a factor with more values than this is a search's samples (Optuna, PBT), not a grid's levels:
# no all-pairs table for it
MAX_FACTOR_LEVELS = 6
REPORT_METRICS = ("val_miou", "val_iou", "best_val_miou")


def _seed_notes(summary: pd.DataFrame) -> list[str]:
    notes = []
    few = summary[summary["inconclusive"]]
    if len(few):
        names = "; ".join(few["config"].head(5)) + (" ..." if len(few) > 5 else "")
        notes.append(
            f"{len(few)} configuration(s) rest on fewer than two COMPLETED seeds ({names}). One "
            "run cannot be told apart from seed-to-seed noise (two identical runs can differ by "
            "~0.015 mIoU): their numbers show what one run gave, not what the configuration "
            "gives. Run more seeds before ranking them.")
    left_out = {k: int(summary[f"n_{k}"].sum()) for k in ("early_stopped", "diverged", "error")}
    if any(left_out.values()):
        notes.append(
            f"{left_out['early_stopped']} EARLY_STOPPED, {left_out['diverged']} DIVERGED and "
            f"{left_out['error']} ERROR trial(s) are counted in the tables but never averaged "
            "into a headline mean: a mean only pools trials that ran the same number of "
            "epochs (the COMPLETED ones).")
    if "common_epoch" in summary.columns:
        epoch = int(summary["common_epoch"].iloc[0])
        notes.append(
            f"Early-stopped trials: every configuration is also shown at epoch {epoch}, the "
            "highest epoch every COMPLETED or EARLY_STOPPED trial reached, each trial's value "
            "read from its history at that epoch.")
    return notes


def _pair_notes(diffs: pd.DataFrame, factor: str, metric: str) -> list[str]:
    notes = []
    for _, d in diffs.iterrows():
        where = f" ({d['group']})" if d["group"] else ""
        pair = f"{factor}={format_value(d['a'])} vs {factor}={format_value(d['b'])}{where}"
        evidence = (f"difference {d['mean_diff']:+.4f} in {metric}, 95% CI "
                    f"[{d['ci_lo']:+.4f}, {d['ci_hi']:+.4f}], p = {d['p_value']:.3g}, "
                    f"Holm-adjusted p = {d['p_holm']:.3g}, {d['n_pairs']} paired seeds")
        if d["verdict"] == NOT_RESOLVED:
            notes.append(
                f"{pair}: {evidence}: not resolved. This does not show that either is better, "
                "nor that they are equal; it shows the difference is smaller than what these "
                "seeds can resolve.")
        elif d["verdict"].startswith("inconclusive"):
            notes.append(f"{pair}: only one seed in common, so no interval can be given; "
                         "the difference is inconclusive.")
        elif d["verdict"].endswith("better"):
            notes.append(f"{pair}: {d['verdict']} ({evidence}).")
    return notes


def _split_note(trials: pd.DataFrame) -> str | None:
    """The warning for trials validated on tiles of their training scenes (``split=random``)."""
    if "split" not in trials.columns:
        return None
    random = int((trials["split"].map(norm_value) == "random").sum())
    if not random:
        return None
    return (f"{random} of {len(trials)} trial(s) use split=random: their validation tiles share "
            "scenes with their training tiles, so their numbers are optimistic for unseen "
            "scenes (split=scene keeps every scene on one side).")


def _notes(trials: pd.DataFrame, summary: pd.DataFrame, diffs: dict[str, pd.DataFrame],
           metric: str) -> list[str]:
    """Plain-language lines on what the tables show and do not show; ``diffs`` maps a factor
    (``points``, ``point_strategy``, ``head``, ...) to its paired differences."""
    notes = _seed_notes(summary)
    for factor, frame in diffs.items():
        notes.extend(_pair_notes(frame, factor, metric))
    if any(len(frame) for frame in diffs.values()):
        notes.append("Each paired-differences table is one family: its p-values (paired "
                     "t-tests) are Holm-adjusted together, and a verdict says 'better' only "
                     "when the adjusted p is below 0.05.")
    split = _split_note(trials)
    if split:
        notes.append(split)
    dropped = int(trials.attrs.get(DUPLICATES_DROPPED, 0) or 0)
    if dropped:
        notes.append(f"{dropped} duplicate trial(s) (same config and seed as another, i.e. the "
                     "same run) were dropped when the experiments were pooled; seeds are "
                     "counted once.")
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
    """Everything :func:`analyze` computed; ``markdown`` is the report text.

    ``differences`` holds the point-count comparisons and ``factor_differences`` every factor's
    (``points``, and ``point_strategy``, ``head``, ``encoder_stages`` when they vary);
    ``strategy_differences`` is None when ``point_strategy`` does not vary among the point
    trials; ``methods`` is None when the trials hold a single method (see
    :mod:`~forest_seg.analysis.methods`); ``baselines`` is None without baseline columns."""

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
    factor_differences: dict[str, pd.DataFrame] = field(default_factory=dict)
    baselines: pd.DataFrame | None = None
    labelling: LabellingVerdict | None = None


def _factor_varies(trials: pd.DataFrame, factor: str) -> bool:
    """Whether ``factor`` varies (for ``point_strategy``: among the trials with points)."""
    if factor not in trials.columns:
        return False
    if factor == "point_strategy" and "points" in trials.columns:
        trials = trials[trials["points"].map(norm_value) != DENSE_POINTS]
    return factor in varying_columns(trials, [factor])


def _diff_table(diffs: pd.DataFrame) -> str:
    shown = diffs[[c for c in diffs.columns if c != "group"]]
    formats = {**config_formats(shown, "n_pairs"), "p_value": ".3g", "p_holm": ".3g"}
    return to_markdown(shown, formats=formats)


def _points_skipped(trials: pd.DataFrame) -> str:
    if "points" not in trials.columns:
        reason = "no `points` column"
    elif "points" not in varying_columns(trials):
        reason = "`points` takes a single value"
    else:
        reason = "no group of the other varying config columns holds two point counts"
    return f"Skipped: {reason}."


def _factor_sections(trials: pd.DataFrame, metric: str
                     ) -> tuple[dict[str, pd.DataFrame], list[tuple[str, str]]]:
    """Paired differences of every factor of :data:`FACTOR_SECTIONS` that varies (points
    always), and their report sections."""
    diffs, sections = {}, []
    for factor, pairs, name in FACTOR_SECTIONS:
        if factor != "points" and not _factor_varies(trials, factor):
            continue
        if factor != "points" and trials[factor].nunique() > MAX_FACTOR_LEVELS:
            continue
        frame = paired_differences(trials, metric=metric, factor=factor, pairs=pairs)
        diffs[factor] = frame
        extra = "; dense points=0 trials left out" if factor == "point_strategy" else ""
        title = (f"{name} (paired by seed; {metric}, a - b; p: paired t-test, p_holm: "
                 f"Holm-adjusted within this table{extra})")
        if len(frame):
            sections.append((title, _diff_table(frame)))
        elif factor == "points":
            sections.append((name, _points_skipped(trials)))
        else:
            sections.append((title, f"No pairs: no group of the other varying columns holds "
                                    f"two values of `{factor}`."))
    return diffs, sections


def _baseline_section(summary: pd.DataFrame, metric: str) -> tuple[pd.DataFrame | None, str]:
    table = baselines_for_report(summary, metric)
    if table is None:
        return None, ("Not recorded: these trials have no `baseline_all_forest_miou` / "
                      "`baseline_colour_miou` columns (experiments written before the "
                      "baselines were computed), so no number here can be set beside the "
                      "all-forest prediction or a colour lookup table.")
    return table, to_markdown(table, formats=config_formats(table, "seeds"))


def _header(trials: pd.DataFrame, metric: str, title: str) -> list[str]:
    experiments = ", ".join(sorted(trials["experiment"].unique())) if (
        "experiment" in trials.columns) else ""
    lines = [f"# {title}", "", f"Experiments: {experiments or 'n/a'}; {len(trials)} trials; "
             f"metric: `{metric}` ({metric_label(metric)}).", "",
             "Means and 95% t-intervals are over the COMPLETED seeds of a configuration, which "
             "all ran the same number of epochs; early-stopped, diverged and failed trials are "
             "counted, never averaged in. Paired differences use the seeds present at both "
             "values compared; their p-values are Holm-adjusted within each table. Best-epoch "
             "numbers are picked on the validation set itself and are optimistic.", ""]
    split = _split_note(trials)
    if split:
        lines += [f"**Warning:** {split}", ""]
    return lines


def _labelling_section(trials: pd.DataFrame, out: Path, metric: str, cost: CostModel,
                       delta: float) -> tuple[LabellingVerdict | None, list, list[Plot]]:
    """The labelling-cost section and plot, when the trials hold two or more labellings: a
    verdict, its key comparisons and the ranking for each group of trials that share the
    other varying config values (one per budget in a fixed-budget study)."""
    if "points" not in trials.columns or trials["points"].map(norm_value).nunique() < 2:
        return None, [], []
    verdict = labelling_verdict(trials, cost, delta=delta, metric=metric)
    if verdict.table.empty:
        return verdict, [], []
    parts, tables = [], []
    for label, group in labelling_groups(trials):
        found = labelling_verdict(group, cost, delta=delta, metric=metric)
        if found.table.empty:
            continue
        tables.append((label, found.table))
        comparisons = "\n".join(f"- {c.describe()}" for c in key_comparisons(
            group, cost, delta=delta, metric=metric))
        parts += [f"**Verdict{', ' + label if label else ''}:** {found.text}.",
                  f"Key comparisons (what the answer rests on):\n\n{comparisons}",
                  to_markdown(labelling_costs_for_report(found.table),
                              formats={"s per tile": "g", "train tiles": "g",
                                       "labelling hours": ".2f"})]
    if not tables:  # labellings only across groups (every lr its own, say): none to compare
        return verdict, [], []
    per_budget = "budget_hours" in trials.columns and trials["budget_hours"].notna().any()
    plot = plot_miou_vs_label_cost(tables, out / "miou_vs_label_cost.png", metric, per_budget)
    model = (f"cost model: {cost.seconds_per_point:g} s per point click, "
             f"{cost.seconds_per_mask:g} s per dense mask of a tile")
    return verdict, [(f"Labelling cost ({metric_label(metric)} against the hours the "
                      f"training labels cost; delta = {delta:g})",
                      "\n\n".join([*parts[:1], model, *parts[1:]]))], [plot]


def analyze(trials: pd.DataFrame, epochs: pd.DataFrame | None, out_dir: str | Path,
            metric: str = HEADLINE_METRIC, comparison: dict | None = None,
            title: str = "Sweep analysis", study=None, *, cost: CostModel | None = None,
            delta: float = DEFAULT_DELTA) -> Analysis:
    """Compute the tables, write the PNGs and ``report.md`` into ``out_dir``.

    ``metric`` defaults to the final epoch's ``val_miou``. ``comparison`` is the dict of
    :func:`~forest_seg.analysis.stats.compare_early_stopping` (optional). Paired differences
    appear for points, and for point strategies (among trials with points), heads and encoder
    stages when they vary; the method comparison at equal trial-epoch budget when the trials
    hold several methods (experiment kinds from the directory names, or lr schedules); a
    Baselines table when the trials carry ``baseline_*`` columns; when two or more labellings
    (point counts, dense) are present, the labelling-cost ranking under ``cost`` with the
    cheapest labelling within ``delta`` of the best (:mod:`~forest_seg.analysis.cost`). With
    ``study`` (the Optuna study of an Optuna experiment) the plots are Optuna's own
    (:mod:`~forest_seg.analysis.optuna_plots`) instead of the grid's. Returns an
    :class:`Analysis`; ``sections`` holds (title, markdown) pairs in report order, for printing.
    """
    out = Path(out_dir)
    writable_dir(out, "report folder", "pass --out a writable folder")
    cost = cost or CostModel()
    summary = summarize(trials, metric, epochs=epochs, cost=cost)
    diffs, pair_sections = _factor_sections(trials, metric)
    methods = (compare_methods(trials, epochs, metric) if method_labels(trials).nunique() > 1
               else None)
    instability = lr_instability(trials, epochs)
    status = status_counts(trials)
    labelling, labelling_sections, cost_plots = _labelling_section(trials, out, metric, cost,
                                                                   delta)
    plots = (make_plots(trials, epochs, out, metric) if study is None
             else optuna_plots(study, out)) + cost_plots
    notes = _notes(trials, summary, diffs, metric)
    if methods is not None:
        notes[-1:-1] = method_notes(methods, trials)
    unfinished = _unfinished(trials, epochs)
    if unfinished:
        notes.insert(0, f"{unfinished} trial(s) have epochs in the history but no results row "
                        "(still running, or the sweep was interrupted); they are left out of "
                        "every table and plot.")
    metrics = [metric, *(m for m in REPORT_METRICS if m != metric)]
    compact = summary_for_report(summary, metrics)
    baselines, baseline_text = _baseline_section(summary, metric)
    sections = [
        ("Trials by status", to_markdown(status)),
        (f"Per configuration ({metric_label(metric)}: mean ± 95% t-interval half-width over "
         "the COMPLETED seeds, all at the same epoch)",
         to_markdown(compact, formats={**config_formats(compact, "seeds"), "epoch": "g"})),
        ("Baselines (network vs the all-forest prediction and a colour lookup table built "
         "from the same labels; gain paired by seed)", baseline_text),
        *labelling_sections,
        *pair_sections,
    ]
    if methods is not None:
        budget = int(methods["budget"].iloc[0])
        sections.append((f"Methods at equal trial-epoch budget (B = {budget} trial-epochs; "
                         f"best config by mean {metric} over seeds)",
                         to_markdown(methods_for_report(methods))))
    if len(instability):
        shown = instability.drop(columns="group")
        sections.append(("Learning-rate instability, lrs compared within matched "
                         "configurations (volatility: mean |change| of val loss between "
                         "epochs; seed_sd: sd of final val mIoU across COMPLETED seeds; "
                         "best_last_gap: best epoch (optimistic) - final val mIoU)",
                         to_markdown(shown, ".4f", formats={**config_formats(shown, "lr"),
                                                            "lr": "g"})))
    if comparison is not None:
        sections.append(("Early stopping: ASHA vs FIFO", to_markdown(comparison_table(comparison))))
    plot_lines = [f"![{p.name}]({p.path.name})" if p.path is not None
                  else f"- `{p.name}.png` skipped: {p.note}." for p in plots]
    sections.append(("Plots", "\n\n".join(plot_lines)))
    sections.append(("What this shows / does not show", "\n".join(f"- {n}" for n in notes)))

    body = [f"## {name}\n\n{text}\n" for name, text in sections]
    markdown = "\n".join(_header(trials, metric, title) + body)
    (out / REPORT_FILE).write_text(markdown, encoding="utf-8")
    return Analysis(summary, diffs["points"], instability, status, plots, comparison, notes,
                    markdown, sections, strategy_differences=diffs.get("point_strategy"),
                    methods=methods, factor_differences=diffs, baselines=baselines,
                    labelling=labelling)
