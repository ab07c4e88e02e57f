"""The accuracy-against-labelling-cost plot: final-epoch val mIoU of each labelling (mean and
95% interval over seeds) against the hours its training labels cost (log x), with the
baselines beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from forest_seg.analysis.plot_style import axis_label, new_figure, save_figure
from forest_seg.analysis.plots import Plot


def _x(table: pd.DataFrame) -> tuple[pd.Series, str]:
    if table["label_hours"].notna().all():
        return table["label_hours"], "Labelling hours of the training set (log scale)"
    return table["label_seconds_per_tile"], "Labelling seconds per tile (log scale)"


def plot_miou_vs_label_cost(table: pd.DataFrame, path: Path, metric: str) -> Plot:
    """Draw :func:`~forest_seg.analysis.cost.labelling_verdict`'s ``table``: a point with its
    interval per labelling, the colour table built from the same labels as hollow squares at
    the same cost, and the all-forest prediction as a horizontal line; PNG and SVG."""
    name = path.stem
    shown = table[table["n_seeds"] > 0]
    if len(shown) < 2:
        return Plot(name, None, "fewer than two labellings with completed trials")
    x, xlabel = _x(shown)
    mean = shown["mean"].to_numpy(float)
    yerr = np.vstack([np.nan_to_num(mean - shown["ci_lo"].to_numpy(float)),
                      np.nan_to_num(shown["ci_hi"].to_numpy(float) - mean)])
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    ax.errorbar(x, mean, yerr=yerr, marker="o", ls="", capsize=3, color="C0",
                label="network (mean, 95% interval over seeds)")
    for xi, yi, text in zip(x, mean, shown["labelling"], strict=True):
        ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(6, 6), fontsize=8)
    if shown["colour_table_mean"].notna().any():
        ax.plot(x, shown["colour_table_mean"], marker="s", ls="", mfc="none", color="C1",
                label="colour lookup table, same labels")
    forest = shown["all_forest_mean"].dropna()
    if len(forest):
        ax.axhline(float(forest.mean()), ls="-.", color="grey", label="predict all forest")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(axis_label(metric))
    ax.set_title("Accuracy against labelling cost")
    ax.legend(fontsize=8)
    return Plot(name, save_figure(fig, path))
