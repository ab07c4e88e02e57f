"""Population Based Training over the learning rate (and optionally the focal gamma).

    python sweeps/pbt.py --population 8 --perturbation-interval 2
    python sweeps/pbt.py --mutate-gamma --points 50 --seed 0
    python sweeps/pbt.py --smoke-test

A population of trials starts from log-uniform lrs in [1e-5, 1e-2]; every
--perturbation-interval epochs (synchronously) the worst quarter copies the checkpoint of a
top-quarter trial and continues with a perturbed lr (x0.8 or x1.2, or a fresh draw). Each
trial's lr path is in history.csv (the `lr` column, one row per epoch); results.csv holds the
trial's final lr.
"""

from __future__ import annotations

import sys

from forest_seg.errors import ConfigError
from forest_seg.sweep import Study, connect, run
from forest_seg.sweep.config_file import parse_flags
from forest_seg.sweep.exits import finish, sweep_cli
from forest_seg.sweep.flags import base_config, build_parser, launch_from_args
from forest_seg.sweep.study import ClipToRange

LR_RANGE = (1e-5, 1e-2)
GAMMAS = [0.0, 1.0, 2.0, 3.0]


def make_pbt(interval: int, mutate_gamma: bool):
    """Ray Tune's PopulationBasedTraining on val mIoU over lr (and gamma).

    Synchronous: every member reaches the perturbation epoch before the bottom quarter copies
    a top-quarter checkpoint, and no member perturbs at its last epoch
    (:mod:`forest_seg.sweep.population`), so no member clones one that has already finished
    (which makes its lr path end early, and held the sweep forever) and each history row's lr
    is the one that trained that epoch. A perturbed lr stays within LR_RANGE.
    """
    from ray import tune

    from forest_seg.sweep.population import PopulationBasedTrainingBeforeLastEpoch

    mutations = {"lr": tune.loguniform(*LR_RANGE)}
    if mutate_gamma:
        mutations["gamma"] = GAMMAS
    return PopulationBasedTrainingBeforeLastEpoch(time_attr="training_iteration",
                                   perturbation_interval=interval,
                                   hyperparam_mutations=mutations, quantile_fraction=0.25,
                                   resample_probability=0.25, synch=True,
                                   custom_explore_fn=ClipToRange((("lr", *LR_RANGE),)))


def main(argv: list[str] | None = None) -> int:
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    parser = build_parser("python sweeps/pbt.py", "Population Based Training over lr.")
    pbt = parser.add_argument_group("population based training")
    pbt.add_argument("--population", type=int, default=None, help="trials (default 8)")
    pbt.add_argument("--perturbation-interval", type=int, default=None,
                     help="epochs between exploit/explore steps (default 2; smoke 1)")
    pbt.add_argument("--mutate-gamma", action="store_true", help="also perturb focal gamma")
    pbt.add_argument("--points", type=int, default=50, help="points per image of every trial")
    pbt.add_argument("--point-strategy", default="balanced")
    pbt.add_argument("--seed", type=int, default=0, help="trial seed (tiles, split, init)")
    pbt.add_argument("--pbt-seed", type=int, default=0,
                     help="seed of the initial lr draws and of PBT's choices")
    args = parse_flags(parser, argv)
    population = args.population or (2 if args.smoke_test else 8)
    interval = args.perturbation_interval or (1 if args.smoke_test else 2)
    if population < 2 or interval < 1:
        raise ConfigError(f"invalid --population {population} / --perturbation-interval "
                          f"{interval}: expected >= 2 trials and >= 1 epoch")
    launch = launch_from_args(args)
    with connect(launch.address) as nodes:
        base = base_config(args, nodes, "pbt").replace(points=args.points,
                                                       point_strategy=args.point_strategy,
                                                       seed=args.seed)
        # A member copies another's checkpoint some time after it was written, so every
        # checkpoint is kept (not just the newest two); checkpointing only at perturbation
        # epochs keeps that affordable.
        if args.checkpoint_every is None:
            base = base.replace(checkpoint_every=interval)
        space = {"lr": tune.loguniform(*LR_RANGE)}
        if args.mutate_gamma:
            space["gamma"] = tune.choice(GAMMAS)
        study = Study(base=base, space=space, samples=population,
                      search=BasicVariantGenerator(random_state=args.pbt_seed),
                      scheduler=make_pbt(interval, args.mutate_gamma), keep_checkpoints=None,
                      driver="pbt", random_seed=args.pbt_seed)
        return finish(run(study, launch))


if __name__ == "__main__":
    sys.exit(sweep_cli(main))
