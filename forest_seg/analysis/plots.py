"""Plots of a sweep, each written as PNG and SVG (matplotlib, Agg canvas).

Each plot function draws on a :class:`matplotlib.figure.Figure` attached to an Agg canvas made
inside the function (:mod:`~forest_seg.analysis.plot_style`: axes in words, series at the same
x dodged apart): importing this module does not import matplotlib, and pyplot's global
backend is never touched. A plot whose data has nothing to show (e.g. a single lr for
``miou_vs_lr``) is skipped: the function returns a :class:`Plot` with ``path=None`` and the
reason in ``note``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from forest_seg.analysis.load import (
    config_label,
    format_value,
    norm_value,
    trial_keys,
    varying_columns,
)
from forest_seg.analysis.methods import method_labels
from forest_seg.analysis.plot_style import axis_label, dodge, new_figure, save_figure
from forest_seg.analysis.stats import DENSE_POINTS, HEADLINE_METRIC, config_ids
from forest_seg.analysis.summary import (
    ALL_FOREST_BASELINE,
    COLOUR_BASELINE,
    summarize,
)

STATUS_COLOURS = {"COMPLETED": "tab:green", "EARLY_STOPPED": "tab:orange",
                  "DIVERGED": "tab:red", "ERROR": "tab:gray"}
MAX_LR_COLUMNS = 8


class Plot(NamedTuple):
    """A plot written to ``path`` (the PNG; the SVG beside it), or skipped (``path is None``)
    for the reason in ``note``."""

    name: str
    path: Path | None
    note: str = ""


def _save(fig, path: Path, name: str) -> Plot:
    return Plot(name, save_figure(fig, path))


def _errorbars(summary: pd.DataFrame, metric: str) -> np.ndarray:
    mean = summary[f"{metric}_mean"].to_numpy(float)
    lo = np.nan_to_num(mean - summary[f"{metric}_ci_lo"].to_numpy(float))
    hi = np.nan_to_num(summary[f"{metric}_ci_hi"].to_numpy(float) - mean)
    return np.vstack([lo, hi])


def _groups(summary: pd.DataFrame, columns: Sequence[str]):
    ids, keys = config_ids(summary, columns)
    for i, key in enumerate(keys):
        yield config_label(dict(zip(columns, key, strict=True)), columns), summary[ids == i]


def _metric_vs(trials: pd.DataFrame, path: Path, metric: str, factor: str, name: str) -> Plot:
    """Mean +- 95% CI of ``metric`` against ``factor`` (log x), a line per other config, each
    series dodged along x."""
    if factor not in trials.columns:
        return Plot(name, None, f"no `{factor}` column")
    summary = summarize(trials, metrics=[metric], metric=metric)
    if factor not in summary.columns:
        return Plot(name, None, f"`{factor}` takes a single value")
    dense_mask = (summary[factor] == DENSE_POINTS) if factor == "points" else (
        summary[factor] <= 0)
    values = {norm_value(v) for v in summary.loc[~dense_mask, factor]}
    if len(values) < 2:
        return Plot(name, None, f"fewer than two positive `{factor}` values")
    others = [c for c in varying_columns(trials) if c != factor]
    groups = list(_groups(summary, others))
    baseline = factor == "points" and f"{COLOUR_BASELINE}_mean" in summary.columns
    series = len(groups) * (2 if baseline else 1)  # a network and a colour-table series each
    fig = new_figure(10, 4.5)
    ax = fig.add_subplot()
    for i, (label, group) in enumerate(groups):
        colour = f"C{i % 10}"
        line = group[~dense_mask.loc[group.index]].sort_values(factor)
        if len(line):
            slot = i * 2 if baseline else i
            ax.errorbar(dodge(line[factor], slot, series, log=True), line[f"{metric}_mean"],
                        yerr=_errorbars(line, metric), marker="o", capsize=3, color=colour,
                        label=label if others else axis_label(metric))
            if baseline and len(line) > 1:  # one series per line of point counts, not per point
                ax.errorbar(dodge(line[factor], slot + 1, series, log=True),
                            line[f"{COLOUR_BASELINE}_mean"],
                            yerr=_errorbars(line, COLOUR_BASELINE), marker="s", ls=":",
                            capsize=3, color=colour, alpha=0.7,
                            label="colour table, same labels" + (f" ({label})" if others
                                                                 else ""))
        dense = group[dense_mask.loc[group.index]]
        if factor == "points" and len(dense):
            row = dense.iloc[0]
            ax.axhline(row[f"{metric}_mean"], ls="--", color=colour,
                       label=f"dense (points=0){', ' + label if others else ''}")
            if pd.notna(row[f"{metric}_ci_lo"]):
                ax.axhspan(row[f"{metric}_ci_lo"], row[f"{metric}_ci_hi"], color=colour,
                           alpha=0.1)
    if factor == "points" and f"{ALL_FOREST_BASELINE}_mean" in summary.columns:
        ax.axhline(summary[f"{ALL_FOREST_BASELINE}_mean"].mean(), ls="-.", color="grey",
                   label="predict all forest")
    ax.set_xscale("log")
    ticks = sorted(values)
    ax.set_xticks(ticks, [format_value(v) for v in ticks])
    ax.minorticks_off()
    ax.set_xlabel(f"{axis_label(factor)} (log scale)")
    ax.set_ylabel(f"{_metric_words(metric)}\n(mean, 95% CI over COMPLETED seeds)",
                  fontsize="small")
    ax.set_title(f"{axis_label(metric)} vs {axis_label(factor).lower()} "
                 "(error bars: 95% CI over seeds)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path, name)


def _metric_words(metric: str) -> str:
    """The y label of a final or best-epoch metric, in words."""
    words = axis_label(metric)
    return words if metric.startswith("best_") else f"{words}, final epoch"


def plot_miou_vs_points(trials: pd.DataFrame, path: str | Path,
                        metric: str = HEADLINE_METRIC) -> Plot:
    """``metric`` vs points per image (log x); points=0 (dense) as a dashed horizontal line.
    When the trials carry baselines: the colour table built from the same labels (dotted, per
    point count) and the all-forest predictor (grey)."""
    return _metric_vs(trials, Path(path), metric, "points", "miou_vs_points")


def plot_miou_vs_lr(trials: pd.DataFrame, path: str | Path,
                    metric: str = HEADLINE_METRIC) -> Plot:
    """``metric`` vs learning rate (log x), a line per other configuration."""
    return _metric_vs(trials, Path(path), metric, "lr", "miou_vs_lr")


def plot_learning_curves(trials: pd.DataFrame, epochs: pd.DataFrame,
                         path: str | Path) -> Plot:
    """Per lr a column: val loss (top) and val mIoU (bottom) by epoch, a line per trial/seed,
    each trial's markers dodged along the epoch axis."""
    name, path = "learning_curves", Path(path)
    if epochs is None or epochs.empty or not {"val_loss", "val_miou"} <= set(epochs.columns):
        return Plot(name, None, "no per-epoch history (history.csv or result.json)")
    keys = [k for k in trial_keys(trials) if k in epochs.columns]
    lr_col = "lr" if "lr" in trials.columns else None
    others = [c for c in varying_columns(trials) if c not in ("lr", "seed")]
    cfg = trials[keys + [c for c in ["seed", *others] if c in trials.columns]]
    if lr_col:
        cfg = cfg.assign(_lr=trials[lr_col].map(norm_value))
    else:
        cfg = cfg.assign(_lr=None)
    data = epochs.drop(columns=[c for c in ("lr",) if c in epochs.columns]).merge(cfg, on=keys)
    if data.empty:
        return Plot(name, None, "history rows match no trial of results")
    from matplotlib.ticker import MaxNLocator

    lrs = sorted({v for v in data["_lr"]}, key=lambda v: (v is None, v or 0))
    if len(lrs) > MAX_LR_COLUMNS:
        return Plot(name, None, f"{len(lrs)} distinct learning rates (more than "
                                f"{MAX_LR_COLUMNS}: a search, not a grid)")
    seeds = sorted({norm_value(s) for s in data.get("seed", pd.Series([None]))},
                   key=lambda v: (v is None, v or 0))
    other_labels = sorted({config_label(r, others) for _, r in data.iterrows()}) if others else []
    styles = ["-", "--", ":", "-."]
    fig = new_figure(3.6 * len(lrs) + 1, 6.5)
    axes = fig.subplots(2, len(lrs), squeeze=False, sharex=True)
    axes[0, 0].set_xlim(0.5, data["epoch"].max() + 0.5)
    for j, lr in enumerate(lrs):
        sub = data[data["_lr"].map(lambda v, lr=lr: v == lr)]
        ax_loss, ax_miou = axes[0, j], axes[1, j]
        lines = sub.groupby(keys, sort=True)
        for index, (_, trial) in enumerate(lines):
            trial = trial.sort_values("epoch")
            x = dodge(trial["epoch"], index, lines.ngroups)
            seed = norm_value(trial["seed"].iloc[0]) if "seed" in trial else None
            # one colour per seed; with other varying columns, colour per configuration and
            # one line style per seed
            label = f"seed={format_value(seed)}"
            colour, style = f"C{seeds.index(seed) % 10}", "-"
            if others:
                other = config_label(trial.iloc[0], others)
                label = f"{other}, {label}"
                colour = f"C{other_labels.index(other) % 10}"
                style = styles[seeds.index(seed) % len(styles)]
            loss = trial["val_loss"].where(np.isfinite(trial["val_loss"]))
            kw = {"marker": ".", "color": colour, "ls": style}
            ax_loss.plot(x, loss, label=label, **kw)
            ax_miou.plot(x, trial["val_miou"], **kw)
        finite = sub["val_loss"][np.isfinite(sub["val_loss"])]
        if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 100:
            ax_loss.set_yscale("log")
        ax_loss.set_title(f"{axis_label('lr')} {format_value(lr)}" if lr_col else "All trials")
        ax_miou.set_xlabel(axis_label("epoch"))
        ax_miou.xaxis.set_major_locator(MaxNLocator(integer=True))
        if j == 0:
            ax_loss.set_ylabel(axis_label("val_loss"))
            ax_miou.set_ylabel(axis_label("val_miou"))
        if len(ax_loss.lines) <= 12:
            ax_loss.legend(fontsize="x-small")
    return _save(fig, path, name)


def plot_asha_stops(trials: pd.DataFrame, path: str | Path) -> Plot:
    """Epochs reached per trial (horizontal bars) coloured by status; planned epochs dashed."""
    name, path = "asha_stops", Path(path)
    if (trials["status"] == "COMPLETED").all():
        return Plot(name, None, "every trial completed its planned epochs: nothing was stopped")
    cols = varying_columns(trials) + (["seed"] if "seed" in trials.columns else [])
    if "experiment" in trials.columns and trials["experiment"].nunique() > 1:
        cols = ["experiment", *cols]
    ordered = trials.sort_values(cols, kind="stable") if cols else trials
    labels = [config_label(row, cols) if cols else str(row["trial_id"])
              for _, row in ordered.iterrows()]
    n = len(ordered)
    fig = new_figure(8, min(2 + 0.25 * n, 40))
    ax = fig.add_subplot()
    y = np.arange(n)
    colours = [STATUS_COLOURS.get(s, "tab:blue") for s in ordered["status"]]
    ax.barh(y, ordered["epochs"].fillna(0), color=colours)
    ax.set_yticks(y, labels, fontsize="x-small")
    ax.invert_yaxis()
    if "max_epochs" in ordered.columns:
        for planned in sorted({norm_value(v) for v in ordered["max_epochs"]} - {None}):
            ax.axvline(planned, ls="--", color="black", lw=1)
    from matplotlib.patches import Patch

    seen = [s for s in STATUS_COLOURS if (ordered["status"] == s).any()]
    ax.legend(handles=[Patch(color=STATUS_COLOURS[s], label=s) for s in seen],
              fontsize="small", loc="lower right")
    ax.set_xlabel(f"{axis_label('epochs')} (dashed: planned)")
    ax.set_title("Where each trial stopped")
    return _save(fig, path, name)


def plot_lr_paths(trials: pd.DataFrame, epochs: pd.DataFrame | None, path: str | Path) -> Plot:
    """The lr of every trial by epoch (log y), coloured by method (PBT, schedules, grid), each
    trial dodged along the epoch axis.

    Drawn only when some trial's lr changes across epochs (a PBT perturbation, a schedule or
    a warm-up); history rows of trials without a results row are left out."""
    name, path = "lr_paths", Path(path)
    if epochs is None or epochs.empty or "lr" not in epochs.columns:
        return Plot(name, None, "no per-epoch lr in the history")
    keys = [k for k in trial_keys(trials) if k in epochs.columns]
    data = epochs[[*keys, "epoch", "lr"]].assign(lr=pd.to_numeric(epochs["lr"], errors="coerce"))
    data = data[np.isfinite(data["lr"]) & (data["lr"] > 0)]
    data = data.merge(trials[keys].assign(_method=method_labels(trials)), on=keys)
    if data.empty:
        return Plot(name, None, "no positive per-epoch lr for any trial of results")
    if not (data.groupby(keys)["lr"].nunique() > 1).any():
        return Plot(name, None, "no trial's lr changes across epochs")
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    methods = sorted(data["_method"].unique())
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot()
    lines = data.groupby(keys, sort=True)
    for index, (_, trial) in enumerate(lines):
        trial = trial.sort_values("epoch")
        colour = f"C{methods.index(trial['_method'].iloc[0]) % 10}"
        ax.plot(dodge(trial["epoch"], index, lines.ngroups), trial["lr"], marker=".", lw=1,
                alpha=0.7, color=colour)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(axis_label("epoch"))
    ax.set_ylabel(f"{axis_label('lr')} (log scale)")
    ax.set_title("Learning rate per epoch, a line per trial")
    ax.legend(handles=[Line2D([], [], color=f"C{i % 10}", marker=".", label=m)
                       for i, m in enumerate(methods)], fontsize="small")
    return _save(fig, path, name)


def make_plots(trials: pd.DataFrame, epochs: pd.DataFrame | None, out_dir: str | Path,
               metric: str = HEADLINE_METRIC) -> list[Plot]:
    """Write every plot into ``out_dir`` (``<name>.png`` and ``<name>.svg``); skipped ones
    carry their reason."""
    out = Path(out_dir)
    return [
        plot_miou_vs_points(trials, out / "miou_vs_points.png", metric),
        plot_miou_vs_lr(trials, out / "miou_vs_lr.png", metric),
        plot_learning_curves(trials, epochs, out / "learning_curves.png"),
        plot_asha_stops(trials, out / "asha_stops.png"),
        plot_lr_paths(trials, epochs, out / "lr_paths.png"),
    ]
