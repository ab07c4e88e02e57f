"""Sweep results -> DataFrames, statistics, plots and a markdown report.

Modules: :mod:`~forest_seg.analysis.load` (experiment directories -> frames),
:mod:`~forest_seg.analysis.stats` (seeds, t-intervals, paired differences between point counts
or point strategies, lr instability, ASHA vs FIFO), :mod:`~forest_seg.analysis.methods`
(grid / lr schedules / PBT / Optuna at an equal trial-epoch budget),
:mod:`~forest_seg.analysis.plots` (PNG plots) and
:mod:`~forest_seg.analysis.report` (markdown tables, ``report.md``). No module imports Ray;
matplotlib is imported only when a plot is drawn.

Typical use::

    from forest_seg.analysis import load_experiments, summarize, paired_differences
    trials, epochs = load_experiments(["runs/grid"])
    print(summarize(trials))
"""

from forest_seg.analysis.load import (
    ResultsError,
    config_columns,
    config_label,
    load_experiment,
    load_experiments,
    varying_columns,
)
from forest_seg.analysis.methods import (
    budget_replay,
    compare_methods,
    config_differences,
    experiment_kind,
    method_labels,
)
from forest_seg.analysis.plots import (
    Plot,
    make_plots,
    plot_asha_stops,
    plot_learning_curves,
    plot_lr_paths,
    plot_miou_vs_lr,
    plot_miou_vs_points,
)
from forest_seg.analysis.report import Analysis, analyze, summary_for_report, to_markdown
from forest_seg.analysis.stats import (
    T_975,
    best_configuration,
    compare_early_stopping,
    comparison_table,
    lr_instability,
    mean_ci,
    paired_differences,
    status_counts,
    summarize,
    t_quantile,
)

__all__ = [
    "T_975", "Analysis", "Plot", "ResultsError", "analyze", "best_configuration",
    "budget_replay", "compare_early_stopping", "compare_methods", "comparison_table",
    "config_columns", "config_differences", "config_label", "experiment_kind",
    "load_experiment", "load_experiments", "lr_instability", "make_plots", "mean_ci",
    "method_labels", "paired_differences", "plot_asha_stops", "plot_learning_curves",
    "plot_lr_paths", "plot_miou_vs_lr", "plot_miou_vs_points", "status_counts", "summarize",
    "summary_for_report", "t_quantile", "to_markdown", "varying_columns",
]
