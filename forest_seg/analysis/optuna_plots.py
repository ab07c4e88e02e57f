"""Optuna's own plots of an experiment of ``sweeps/optuna_search.py``, drawn instead of the
grid plots: optimisation history, parameter importances, slice and parallel coordinates
(``optuna.visualization.matplotlib``), with the axes in words, log axes for log-scaled
parameters (lr, points) and each plot saved as PNG and SVG like the grid plots."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from forest_seg.analysis.load import trial_drivers
from forest_seg.analysis.plot_style import axis_label, save_figure
from forest_seg.analysis.plots import Plot
from forest_seg.analysis.stats import HEADLINE_METRIC

OPTUNA_DRIVER = "optuna"  # results.csv's driver of sweeps/optuna_search.py
OPTUNA_PLOTS = ("optimization_history", "param_importances", "slice", "parallel_coordinate")


def experiment_study(exp_dirs: Sequence[str | Path], trials: pd.DataFrame):
    """The Optuna study behind ``trials`` when they are one Optuna experiment (every trial's
    driver is ``optuna``) whose study can be found (:func:`forest_seg.sweep.optuna_storage.
    load_study`), else None (the grid plots are drawn)."""
    if len(exp_dirs) != 1 or trials.empty or not (trial_drivers(trials) == OPTUNA_DRIVER).all():
        return None
    from forest_seg.sweep.optuna_storage import load_study

    return load_study(exp_dirs[0])


def _relabel(ax, names: Sequence[str]) -> None:
    """Parameter names on ``ax``'s axis labels and tick labels shown in words."""
    for get, set_ in ((ax.get_xlabel, ax.set_xlabel), (ax.get_ylabel, ax.set_ylabel)):
        if get() in names:
            set_(axis_label(get()))
    for axis in (ax.xaxis, ax.yaxis):
        labels = [t.get_text() for t in axis.get_ticklabels()]
        if any(label in names for label in labels):
            axis.set_ticks(axis.get_ticklocs(),
                           [axis_label(t) if t in names else t for t in labels])


def _draw(name: str, study, target: str):
    """Optuna's matplotlib plot ``name`` of ``study``: its figure."""
    import optuna
    import optuna.visualization.matplotlib as ovm

    draw = getattr(ovm, f"plot_{name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        drawn = draw(study, target_name=axis_label(target))
    fig = (drawn.flat[0] if hasattr(drawn, "flat") else drawn).figure
    for ax in fig.axes:  # the plot's axes, twin axes and colour bar
        _relabel(ax, list(study.best_trial.params))
        _readable_ticks(ax)
    fig.set_size_inches(10, 5)
    return fig


def _log_tick(value: float, _position=None) -> str:
    """A log-axis tick: ``2e-04`` below 1 (learning rates), ``50`` from 1 up (points)."""
    return f"{value:g}" if value >= 1 else f"{value:.0e}"


def _readable_ticks(ax) -> None:
    """Log axes ticked at 1, 2 and 5 times each power of ten with short labels
    (:func:`_log_tick`), no labels between; x tick labels horizontal."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            axis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
            axis.set_major_formatter(FuncFormatter(_log_tick))
            axis.set_minor_formatter(NullFormatter())
    for label in ax.get_xticklabels():
        label.set(rotation=0, horizontalalignment="center")


def optuna_plots(study, out_dir: str | Path, target: str = HEADLINE_METRIC) -> list[Plot]:
    """Write :data:`OPTUNA_PLOTS` of ``study`` into ``out_dir`` as ``optuna_<name>.png`` and
    ``.svg``; a plot Optuna cannot draw (e.g. importances of one finished trial) is skipped
    with its reason. ``target``: the objective's column, named on the axes."""
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    names = [f"optuna_{name}" for name in OPTUNA_PLOTS]
    if not study.get_trials(states=(TrialState.COMPLETE,)):
        return [Plot(name, None, "no COMPLETE trial in the Optuna study") for name in names]
    plots = []
    for name, file_name in zip(OPTUNA_PLOTS, names, strict=True):
        try:
            fig = _draw(name, study, target)
        except (ValueError, RuntimeError) as exc:
            plots.append(Plot(file_name, None, f"Optuna cannot draw it: {exc}"))
            continue
        plots.append(Plot(file_name, save_figure(fig, Path(out_dir) / f"{file_name}.png")))
        plt.close(fig)
    return plots
