"""Sweep results -> DataFrames, statistics, plots and a markdown report.

Modules: :mod:`~forest_seg.analysis.load` (experiment directories -> frames; repeated
(config, seed) runs counted once), :mod:`~forest_seg.analysis.stats` (t-intervals, paired
t-tests, Holm's adjustment, headline trials, lr instability, ASHA vs FIFO),
:mod:`~forest_seg.analysis.summary` (per-configuration means that never mix epoch counts, with
baselines), :mod:`~forest_seg.analysis.pairs` (paired differences between values of a factor:
points, point strategies, heads, encoder stages), :mod:`~forest_seg.analysis.methods`
(grid / lr schedules / PBT / Optuna at an equal trial-epoch budget),
:mod:`~forest_seg.analysis.plots` (plots as PNG and SVG, drawn in the style of
:mod:`~forest_seg.analysis.plot_style`), :mod:`~forest_seg.analysis.optuna_plots` (Optuna's
own plots of an Optuna experiment),
:mod:`~forest_seg.analysis.tables` (markdown tables) and
:mod:`~forest_seg.analysis.report` (``report.md``). No module imports Ray;
matplotlib is imported only when a plot is drawn. The headline metric everywhere is the final
epoch's ``val_miou``.

Typical use::

    from forest_seg.analysis import load_experiments, summarize, paired_differences
    trials, epochs = load_experiments(["runs/grid"])
    print(summarize(trials, epochs=epochs))
"""

from forest_seg.analysis.load import (
    ResultsError,
    config_columns,
    config_label,
    drop_duplicate_trials,
    experiment_kind,
    load_experiment,
    load_experiments,
    trial_drivers,
    varying_columns,
)
from forest_seg.analysis.methods import (
    budget_replay,
    compare_methods,
    config_differences,
    method_labels,
)
from forest_seg.analysis.pairs import paired_differences
from forest_seg.analysis.plots import (
    Plot,
    make_plots,
    plot_asha_stops,
    plot_learning_curves,
    plot_lr_paths,
    plot_miou_vs_lr,
    plot_miou_vs_points,
)
from forest_seg.analysis.report import Analysis, analyze
from forest_seg.analysis.stats import (
    HEADLINE_METRIC,
    best_configuration,
    compare_early_stopping,
    comparison_table,
    headline_mask,
    holm,
    lr_instability,
    mean_ci,
    paired_p_value,
    status_counts,
    t_quantile,
)
from forest_seg.analysis.summary import common_epoch, metric_label, summarize
from forest_seg.analysis.tables import summary_for_report, to_markdown

__all__ = [
    "HEADLINE_METRIC", "Analysis", "Plot", "ResultsError", "analyze", "best_configuration",
    "budget_replay", "common_epoch", "compare_early_stopping", "compare_methods",
    "comparison_table", "config_columns", "config_differences", "config_label",
    "drop_duplicate_trials", "experiment_kind", "headline_mask", "holm", "load_experiment",
    "load_experiments", "lr_instability", "make_plots", "mean_ci", "method_labels",
    "metric_label", "paired_differences", "paired_p_value", "plot_asha_stops",
    "plot_learning_curves", "plot_lr_paths", "plot_miou_vs_lr", "plot_miou_vs_points",
    "status_counts", "summarize", "summary_for_report", "t_quantile", "to_markdown",
    "trial_drivers", "varying_columns",
]
