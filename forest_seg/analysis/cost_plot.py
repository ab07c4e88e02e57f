"""The accuracy-against-labelling-cost plot: final-epoch val mIoU of each labelling (mean and
95% interval over seeds) against the hours its training labels cost (log x), with the
baselines beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from forest_seg.analysis.cost import labelling_name
from forest_seg.analysis.plot_style import axis_label, dodge, new_figure, save_figure
from forest_seg.analysis.plots import Plot


def _x(table: pd.DataFrame) -> tuple[pd.Series, str]:
    if table["label_hours"].notna().all():
        return table["label_hours"], "Labelling hours of the training set (log scale)"
    return table["label_seconds_per_tile"], "Labelling seconds per tile (log scale)"


def plot_miou_vs_label_cost(tables: list[tuple[str, pd.DataFrame]], path: Path, metric: str,
                            per_budget: bool = False) -> Plot:
    """Draw the ``table`` of :func:`~forest_seg.analysis.cost.labelling_verdict` for each
    labelled group in ``tables`` (a one-group label may be ""): a point with its interval per
    labelling, the colour table built from the same labels as hollow squares beside it, and
    the all-forest prediction as a horizontal line; PNG and SVG. x is the labelling hours (log
    scale); with ``per_budget`` (a fixed-budget study, one group per budget, whose labellings
    cost about the same) x is the labelling instead, each budget's points side by side and
    marked with the hours spent. Returns the :class:`~forest_seg.analysis.plots.Plot`."""
    name = path.stem
    shown = [(label, table[table["n_seeds"] > 0]) for label, table in tables]
    shown = [(label, table) for label, table in shown if len(table)]
    if sum(len(table) for _, table in shown) < 2:
        return Plot(name, None, "fewer than two labellings with completed trials")
    order = sorted({p for _, t in shown for p in t["points"]}, key=_cost_order)
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    xlabel, forest = "Labelling", []
    for i, (label, table) in enumerate(shown):
        if per_budget:
            x = dodge([order.index(p) for p in table["points"]], i, len(shown))
            notes = [f"{h:.1f} h" for h in table["label_hours"]]
        else:
            x, xlabel = _x(table)
            x, notes = x.to_numpy(float), table["labelling"].tolist()
        mean = table["mean"].to_numpy(float)
        yerr = np.vstack([np.nan_to_num(mean - table["ci_lo"].to_numpy(float)),
                          np.nan_to_num(table["ci_hi"].to_numpy(float) - mean)])
        suffix = f", {label}" if label else ""
        ax.errorbar(x, mean, yerr=yerr, marker="o", ls="", capsize=3, color=f"C{2 * i}",
                    label=f"network (mean, 95% interval over seeds){suffix}")
        for xi, yi, text in zip(x, mean, notes, strict=True):
            ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(6, 6), fontsize=8)
        if table["colour_table_mean"].notna().any():
            ax.plot(x, table["colour_table_mean"], marker="s", ls="", mfc="none",
                    color=f"C{2 * i + 1}", label=f"colour lookup table, same labels{suffix}")
        forest += table["all_forest_mean"].dropna().tolist()
    if forest:
        ax.axhline(float(np.mean(forest)), ls="-.", color="grey", label="predict all forest")
    if per_budget:
        ax.set_xticks(range(len(order)), [labelling_name(p) for p in order])
        ax.set_title("Accuracy at a fixed labelling budget (each point: hours spent)")
    else:
        ax.set_xscale("log")
        ax.set_title("Accuracy against labelling cost")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(axis_label(metric))
    ax.legend(fontsize=8)
    return Plot(name, save_figure(fig, path))


def _cost_order(points: float) -> tuple[bool, float]:
    """Point counts ascending, dense (0) last."""
    return (points == 0, points)
