"""The original report's study as a Ray Tune grid, with ASHA early stopping.

    python sweeps/grid.py                  # CPU preset, embedded synthetic data, 3 seeds
    python sweeps/grid.py --smoke-test     # a minute: a few tiny trials
    python sweeps/grid.py --preset paper --data "/data/Forest Segmented" --gpus-per-trial 0.25
    python sweeps/grid.py --cross --seeds 5 --strategies balanced forest
    python sweeps/grid.py --heads unet linear --encoder-stages 2 4   # heads, depths compared
    python sweeps/grid.py --resume         # continue the newest grid experiment after a crash

The study: points per image {10, 50, 100, 200} at lr 1e-4, and lr {1e-3, 1e-4, 1e-5} at 50
points (6 distinct configurations), each over --seeds seeds, plus the dense-mask reference
(points=0) unless --no-dense. ``--heads A B`` and ``--encoder-stages X Y`` run the study with
the first value and add each other value at --base-points/--base-lr (every configuration with
--cross). Validation holds out whole scenes (--split scene) unless --split random is given.
Results land in <storage-path>/<name>/results.csv and history.csv; the table sorted by val
mIoU is printed at the end.
"""

from __future__ import annotations

import sys
from typing import Any

from forest_seg.errors import ConfigError
from forest_seg.sweep import Study, connect, run
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
    args = parser.parse_args(argv)
    defaults = SMOKE if args.smoke_test else REPORT
    pick = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in defaults.items()}
    alternatives = {name: multi_values(args, name)[1:] for name in MULTI_VALUED}
    trials = study_configs(pick["points"], pick["lrs"], args.strategies, pick["seeds"],
                           dense=not args.no_dense, cross=args.cross,
                           base_points=args.base_points, base_lr=pick["base_lr"],
                           alternatives={k: v for k, v in alternatives.items() if v})
    launch = launch_from_args(args)
    with connect(launch.address) as nodes:
        study = Study(base=base_config(args, nodes, "grid", several=True), trials=trials,
                      scheduler=scheduler_from_args(args), driver="grid")
        return finish(run(study, launch))


if __name__ == "__main__":
    sys.exit(sweep_cli(main))
