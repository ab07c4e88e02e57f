"""Tables, plots and a markdown report from one or more experiment directories.

Run::

    python sweeps/analyze.py runs/grid                       # writes runs/grid/analysis/
    python sweeps/analyze.py runs/points runs/lr --out report --metric best_val_miou
    python sweeps/analyze.py runs/grid_asha --compare runs/grid_asha runs/grid_fifo
    python sweeps/analyze.py runs/grid-20240101-120000 runs/pbt-20240102-090000  # methods

Each EXP_DIR is a directory written by ``sweeps/grid.py``, ``sweeps/optuna_search.py`` or
``sweeps/pbt.py`` (``results.csv`` + ``history.csv``, or only Ray Tune's trial folders after a
crash). Several directories are pooled (configurations are matched across them). The tables are
printed and written with the plots (PNG, SVG) to ``OUT/report.md``. The headline metric is the final
epoch's val mIoU over the COMPLETED seeds of each configuration (no mean mixes epoch counts);
``--metric best_val_miou`` ranks by the best epoch instead, which is picked on validation and
so optimistic. Trials repeated across the directories (same config and seed) count once.
``--compare ASHA_DIR FIFO_DIR``
adds the early-stopping study: trial-epochs ASHA saved, whether both pick the same best
configuration and the regret in the metric if not. Bad input ends with exit status 2 and one
line on stderr.

Sections that appear when the data calls for them:

- point strategies at equal point counts, heads, encoder stages, each paired by seed (with
  Holm-adjusted paired t-tests), when ``point_strategy``, ``head`` or ``encoder_stages`` varies;
- labelling cost, when several labellings (point counts, dense) were run: each priced under
  the cost model (``--seconds-per-point``, ``--seconds-per-mask``), ranked by the hours their
  training labels cost, a plot of val mIoU against those hours, and the verdict: the cheapest
  labelling whose mIoU is within ``--delta`` of the best (paired one-sided t-tests, Holm), or
  that the seeds run do not resolve it and about how many would;
- baselines (all-forest prediction, colour lookup table, the network's gain over it) when the
  trials carry ``baseline_*`` columns; a warning when trials used ``split=random``;
- methods at an equal trial-epoch budget, when the trials hold several methods: a method is
  the driver that ran the trials (results.csv's ``driver`` column: ``grid``, ``pbt``,
  ``optuna``, or the name a Study gave), split by ``lr_schedule`` when a driver uses several.
  Each method's trials are replayed in trial_id (launch) order up to the smallest method's
  trial-epochs;
  see ``forest_seg.analysis.methods`` for the approximation this makes;
- ``lr_paths.png`` (lr per epoch and trial) when some trial's lr changed (PBT, schedules).

Every plot is written as PNG and SVG. A single experiment of ``sweeps/optuna_search.py`` (every
trial's ``driver`` is ``optuna``) whose Optuna study is found (its ``optuna.db``, or the
``--study-storage`` its sweep.json names) gets Optuna's own plots instead of the grid plots:
``optuna_optimization_history``, ``optuna_param_importances``, ``optuna_slice`` and
``optuna_parallel_coordinate``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from forest_seg.analysis import (
    ResultsError,
    analyze,
    compare_early_stopping,
    config_columns,
    load_experiments,
)
from forest_seg.analysis.cost import (
    DEFAULT_DELTA,
    SECONDS_PER_MASK,
    SECONDS_PER_POINT,
    CostModel,
)
from forest_seg.analysis.load import trial_keys
from forest_seg.analysis.optuna_plots import experiment_study
from forest_seg.errors import ForestSegError

METRICS = ("val_miou", "best_val_miou")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="analyze.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exp_dirs", nargs="+", metavar="EXP_DIR", type=Path,
                        help="experiment directory (results.csv/history.csv or Ray Tune files)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder for report.md and the plots (default: "
                             "<first EXP_DIR>/analysis)")
    parser.add_argument("--metric", choices=METRICS, default="val_miou",
                        help="metric used to rank and compare configurations (default: the "
                             "final epoch's val mIoU; best_val_miou is optimistic: picked on "
                             "validation)")
    parser.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                        help="keep only trials whose config column has this value "
                             "(repeatable; e.g. --where points=50)")
    parser.add_argument("--seconds-per-point", type=float, default=SECONDS_PER_POINT,
                        help="labelling cost of one point click, in seconds (default "
                             f"{SECONDS_PER_POINT:g}: an assumption; see README 'Labelling "
                             "cost')")
    parser.add_argument("--seconds-per-mask", type=float, default=SECONDS_PER_MASK,
                        help="labelling cost of one tile's dense mask, in seconds (default "
                             f"{SECONDS_PER_MASK:g}, Bearman et al. 2016)")
    parser.add_argument("--delta", type=float, default=DEFAULT_DELTA,
                        help="the verdict names the cheapest labelling whose mIoU is within "
                             f"delta of the best (default {DEFAULT_DELTA:g})")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("ASHA_DIR", "FIFO_DIR"),
                        help="early-stopping study: an ASHA run and a FIFO run of the same grid")
    return parser


def select(trials: pd.DataFrame, epochs: pd.DataFrame, conditions: list[str]):
    """The trials (and their epochs) matching every ``COLUMN=VALUE`` condition; numbers are
    compared as numbers (``lr=1e-3`` matches 0.001)."""
    for condition in conditions:
        column, sep, value = condition.partition("=")
        if not sep or column not in trials.columns:
            raise ResultsError(f"--where {condition!r}: expected COLUMN=VALUE with a column of "
                               f"the results ({', '.join(config_columns(trials, True))})")
        try:
            keep = np.isclose(pd.to_numeric(trials[column], errors="coerce"), float(value))
        except ValueError:
            keep = trials[column].astype(str) == value
        trials = trials[keep]
        if trials.empty:
            raise ResultsError(f"--where {condition!r}: no trial matches")
    keys = trial_keys(trials)
    matched = epochs.merge(trials[keys].drop_duplicates(), on=keys)
    return trials.reset_index(drop=True), matched


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out if args.out is not None else args.exp_dirs[0] / "analysis"
    compare = " ".join(map(str, args.compare)) if args.compare else "none"
    print(f"analyze: exp_dirs={' '.join(map(str, args.exp_dirs))} out={out} "
          f"metric={args.metric} compare={compare} where={args.where}")
    try:
        trials, epochs = select(*load_experiments(args.exp_dirs), args.where)
        comparison = None
        if args.compare:
            asha, _ = load_experiments([args.compare[0]])
            fifo, _ = load_experiments([args.compare[1]])
            comparison = compare_early_stopping(asha, fifo, metric=args.metric)
        cost = CostModel(args.seconds_per_point, args.seconds_per_mask)
        result = analyze(trials, epochs, out, metric=args.metric, comparison=comparison,
                         study=experiment_study(args.exp_dirs, trials), cost=cost,
                         delta=args.delta)
    except ForestSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for title, text in result.sections:
        print(f"\n## {title}\n\n{text}")
    print(f"\nwrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
