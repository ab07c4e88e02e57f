"""The original report's study as a Ray Tune grid, with ASHA early stopping.

    python sweeps/grid.py                  # CPU preset, embedded synthetic data, 3 seeds
    python sweeps/grid.py --smoke-test     # a minute: a few tiny trials
    python sweeps/grid.py --preset paper --data "/data/Forest Segmented" --gpus-per-trial 0.25
    python sweeps/grid.py --cross --seeds 5 --strategies balanced forest
    python sweeps/grid.py --heads unet linear --encoder-stages 2 4   # heads, depths compared
    python sweeps/grid.py --resume         # continue the newest grid experiment after a crash
    python sweeps/grid.py --budget-hours 2 8   # labellings at equal labelling cost
    python sweeps/grid.py --until-resolved --max-seeds 10   # seeds added until resolved

The study: points per image {10, 50, 100, 200} at lr 1e-4, and lr {1e-3, 1e-4, 1e-5} at 50
points (6 distinct configurations), each over --seeds seeds, plus the dense-mask reference
(points=0) unless --no-dense. ``--heads A B`` and ``--encoder-stages X Y`` run the study with
the first value and add each other value at --base-points/--base-lr (every configuration with
--cross). Validation holds out whole scenes (--split scene) unless --split random is given.
``--budget-hours H [H ...]`` runs a fixed-budget study instead: each labelling (the point
counts and dense) at --base-lr on only as many training tiles as H hours of labelling buy under
the cost model (--seconds-per-point, --seconds-per-mask): a seeded subset, nested across
labellings and budgets for one seed; validation untouched; every trial's epoch visits as many
training tiles (--epoch-tiles; default the most any budget buys), so each trains as many
steps. ``--until-resolved`` runs the labellings at --base-lr (FIFO) and adds seeds, in rounds
while the sweep runs, to those whose key comparisons (each point count vs dense, and vs the
cheapest labelling within --delta of the best) are not resolved yet, up to --max-seeds
(forest_seg.sweep.until_resolved).
Results land in <storage-path>/<name>/results.csv and history.csv; the table sorted by val
mIoU is printed at the end.
"""

from __future__ import annotations

import sys
from typing import Any

from forest_seg.config import TrainConfig
from forest_seg.errors import ConfigError
from forest_seg.labelling_cost import (
    DEFAULT_DELTA,
    SECONDS_PER_MASK,
    SECONDS_PER_POINT,
    CostModel,
    labelling_name,
)
from forest_seg.sweep import Study, connect, run
from forest_seg.sweep.config_file import parse_flags
from forest_seg.sweep.exits import finish, sweep_cli
from forest_seg.sweep.flags import (
    MULTI_VALUED,
    base_config,
    build_parser,
    launch_from_args,
    multi_values,
    scheduler_from_args,
)

REPORT = {"points": [10, 50, 100, 200], "lrs": [1e-3, 1e-4, 1e-5], "base_lr": 1e-4, "seeds": 3}
SMOKE = {"points": [10, 50], "lrs": [1e-3], "base_lr": 1e-3, "seeds": 1}


def study_configs(points: list[int], lrs: list[float], strategies: list[str], seeds: int,
                  dense: bool = True, cross: bool = False, base_points: int = 50,
                  base_lr: float = 1e-4, alternatives: dict[str, list] | None = None
                  ) -> list[dict[str, Any]]:
    """Every trial of the study as a dict of swept fields, seed-major (all configurations of
    seed 0 first, so early results already cover the whole study).

    ``alternatives`` maps a fixed field (``head``, ``encoder_stages``) to values other than
    the base one: each adds the configuration (``base_points``, ``base_lr``, first strategy)
    with that value, or, with ``cross``, multiplies every configuration by the values.
    """
    if seeds < 1:
        raise ConfigError(f"invalid --seeds {seeds}: expected an integer >= 1")
    if cross:
        pairs = [(p, lr) for p in points for lr in lrs]
    else:
        pairs = [(p, base_lr) for p in points] + [(base_points, lr) for lr in lrs]
    configs = [{"points": p, "lr": lr, "point_strategy": s}
               for p, lr in dict.fromkeys(pairs) for s in strategies]
    if dense:
        configs.append({"points": 0, "lr": base_lr, "point_strategy": strategies[0]})
    base = {"points": base_points, "lr": base_lr, "point_strategy": strategies[0]}
    for name, values in (alternatives or {}).items():
        if cross:
            configs += [{**config, name: value} for value in values for config in configs]
        else:
            configs += [{**base, name: value} for value in values]
    return [{**config, "seed": seed} for seed in range(seeds) for config in configs]


def labelling_configs(points: list[int], strategy: str, seeds: int, dense: bool = True,
                      base_lr: float = 1e-4) -> list[dict[str, Any]]:
    """Each labelling (the point counts, and dense as points 0) at ``base_lr``, a trial per
    seed; seed-major."""
    if seeds < 1:
        raise ConfigError(f"invalid --seeds {seeds}: expected an integer >= 1")
    configs = [{"points": p, "lr": base_lr, "point_strategy": strategy}
               for p in [*points, *([0] if dense else [])]]
    return [{**config, "seed": seed} for seed in range(seeds) for config in configs]


def budget_configs(points: list[int], budgets: list[float], strategy: str, seeds: int,
                   model: CostModel, batch_size: int, dense: bool = True,
                   base_lr: float = 1e-4) -> list[dict[str, Any]]:
    """The fixed-budget study: per budget (hours) and labelling
    (:func:`labelling_configs`), a trial per seed on the ``max_train_tiles`` that budget buys
    (:meth:`CostModel.tiles_for`); seed-major. A budget that buys fewer tiles than a batch is
    a ConfigError naming it."""
    labellings = labelling_configs(points, strategy, seeds, dense, base_lr)
    trials = []
    for seed in range(seeds):
        for hours in budgets:
            for trial in (t for t in labellings if t["seed"] == seed):
                tiles = model.tiles_for(hours, trial["points"])
                if tiles < batch_size:
                    raise ConfigError(
                        f"--budget-hours {hours:g} buys {tiles} tile(s) of "
                        f"{labelling_name(trial['points'])} "
                        f"({model.seconds_per_tile(trial['points']):g} s each), fewer than "
                        f"--batch-size {batch_size}: raise the budget or leave that "
                        "labelling out")
                trials.append({**trial, "max_train_tiles": tiles, "budget_hours": hours})
    return trials


def equal_steps(base: TrainConfig, trials: list[dict[str, Any]]) -> TrainConfig:
    """``base`` with ``epoch_tiles`` set, unless given, to the most tiles a budget trial
    buys: every labelling then trains as many steps per epoch, its smaller training set
    visited in repeated passes, and a difference in mIoU is the labels', not less training."""
    if base.epoch_tiles is not None:
        return base
    return base.replace(epoch_tiles=max(t["max_train_tiles"] for t in trials))


def budget_lines(trials: list[dict[str, Any]], budgets: list[float]) -> str:
    """What each budget buys, one line per budget (printed before the sweep starts)."""
    seed0 = [t for t in trials if t["seed"] == 0]
    per = len(seed0) // len(budgets)
    return "\n".join(
        f"budget {hours:g} h: " + ", ".join(
            f"{labelling_name(t['points'])} {t['max_train_tiles']} tiles"
            for t in seed0[i * per:(i + 1) * per])
        for i, hours in enumerate(budgets))


def until_resolved_study(base: TrainConfig, trials: list[dict[str, Any]], max_seeds: int,
                         delta: float, model: CostModel) -> Study:
    """The labellings of ``trials`` (their seeds 0 .. n-1 the first round) under the
    :class:`~forest_seg.sweep.until_resolved.SeedsUntilResolved` searcher, FIFO."""
    from forest_seg.sweep.until_resolved import SeedsUntilResolved

    configs = [{k: v for k, v in t.items() if k != "seed"} for t in trials if t["seed"] == 0]
    seeds = len(trials) // len(configs)
    search = SeedsUntilResolved(configs, seeds, max_seeds=max_seeds, delta=delta, cost=model)
    return Study(base=base, space={}, search=search, samples=len(configs) * max_seeds,
                 scheduler=None, driver="grid")


def resolution_text(results, model: CostModel, delta: float) -> str:
    """The closing lines of an until-resolved sweep: each key comparison, resolved or not, and
    on how many paired seeds."""
    from forest_seg.analysis.cost import key_comparisons  # pandas and scipy: after the sweep

    done = key_comparisons(results, model, delta=delta) if len(results) else []
    lines = [f"until-resolved: {c.describe()}" for c in done]
    return "\n".join(lines or ["until-resolved: no comparison could be made"])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python sweeps/grid.py", "The report's study as a Ray Tune grid.")
    grid = parser.add_argument_group("grid")
    grid.add_argument("--points", type=int, nargs="+", default=None,
                      help=f"points per image (default {REPORT['points']})")
    grid.add_argument("--lrs", type=float, nargs="+", default=None,
                      help=f"learning rates (default {REPORT['lrs']})")
    grid.add_argument("--strategies", nargs="+", default=["balanced"],
                      help="point strategies (forest_seg.points.POINT_STRATEGIES)")
    grid.add_argument("--seeds", type=int, default=None, help="seeds per configuration (3)")
    grid.add_argument("--base-points", type=int, default=50, help="points of the lr series")
    grid.add_argument("--base-lr", type=float, default=None, help="lr of the points series")
    grid.add_argument("--cross", action="store_true", help="the full points x lr product")
    grid.add_argument("--no-dense", action="store_true", help="skip the dense reference")
    budget = parser.add_argument_group("labelling budget")
    budget.add_argument("--budget-hours", type=float, nargs="+", default=None, metavar="H",
                        help="fixed-budget study: each labelling on the tiles H hours of "
                             "labelling buy (at --base-lr; no lr series)")
    budget.add_argument("--seconds-per-point", type=float, default=SECONDS_PER_POINT,
                        help=f"seconds per point click (default {SECONDS_PER_POINT:g})")
    budget.add_argument("--seconds-per-mask", type=float, default=SECONDS_PER_MASK,
                        help=f"seconds per dense tile mask (default {SECONDS_PER_MASK:g})")
    budget.add_argument("--until-resolved", action="store_true",
                        help="add seeds in rounds until the key comparisons are resolved")
    budget.add_argument("--max-seeds", type=int, default=10,
                        help="--until-resolved: most seeds per configuration (default 10)")
    budget.add_argument("--delta", type=float, default=DEFAULT_DELTA,
                        help="--until-resolved: a labelling within delta mIoU of the best is "
                             f"adequate (default {DEFAULT_DELTA:g})")
    args = parse_flags(parser, argv)
    defaults = SMOKE if args.smoke_test else REPORT
    pick = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in defaults.items()}
    alternatives = {name: multi_values(args, name)[1:] for name in MULTI_VALUED}
    launch = launch_from_args(args)
    with connect(launch.address) as nodes:
        base = base_config(args, nodes, "grid", several=True)
        model = CostModel(args.seconds_per_point, args.seconds_per_mask)
        if args.budget_hours:
            trials = budget_configs(pick["points"], args.budget_hours, args.strategies[0],
                                    pick["seeds"], model, base.batch_size,
                                    dense=not args.no_dense, base_lr=pick["base_lr"])
            base = equal_steps(base, trials)
            print(budget_lines(trials, args.budget_hours), flush=True)
            print(f"budget: every trial's epoch visits {base.epoch_tiles} training tiles "
                  "(--epoch-tiles), so each labelling trains as many steps", flush=True)
        elif args.until_resolved:
            trials = labelling_configs(pick["points"], args.strategies[0], pick["seeds"],
                                       dense=not args.no_dense, base_lr=pick["base_lr"])
        else:
            trials = study_configs(pick["points"], pick["lrs"], args.strategies, pick["seeds"],
                                   dense=not args.no_dense, cross=args.cross,
                                   base_points=args.base_points, base_lr=pick["base_lr"],
                                   alternatives={k: v for k, v in alternatives.items() if v})
        if args.until_resolved:
            study = until_resolved_study(base, trials, args.max_seeds, args.delta, model)
        else:
            study = Study(base=base, trials=trials, scheduler=scheduler_from_args(args),
                          driver="grid")
        results = run(study, launch)
        if args.until_resolved:
            print(resolution_text(results, model, args.delta))
        return finish(results)


if __name__ == "__main__":
    sys.exit(sweep_cli(main))
