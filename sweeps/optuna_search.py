"""Optuna (TPE) search over points per image and learning rate, with ASHA early stopping.

    python sweeps/optuna_search.py --num-trials 20 --name tpe   # study in runs/tpe/optuna.db
    python sweeps/optuna_search.py --smoke-test
    python sweeps/optuna_search.py --study-storage sqlite:///runs/optuna.db --name tpe-1
    optuna-dashboard sqlite:///runs/tpe/optuna.db   # the study is named like the experiment

Trials ASHA stops are PRUNED in the study, with their per-epoch val mIoU as intermediate
values; every trial carries the user attributes ray_trial_id, status, epochs and checkpoint
(forest_seg.sweep.optuna_trials). ``sweeps/analyze.py`` draws Optuna's own plots for it.

The space: points an integer on a log scale in [5, 400], lr log-uniform in [1e-6, 1e-2].
Each trial runs the same trainable as the grid and the experiment directory holds the same
results.csv / history.csv.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from forest_seg.errors import ConfigError
from forest_seg.sweep import METRIC, MODE, Study, connect, default_name, run
from forest_seg.sweep.config_file import parse_flags
from forest_seg.sweep.exits import finish, sweep_cli
from forest_seg.sweep.flags import base_config, build_parser, launch_from_args, scheduler_from_args
from forest_seg.sweep.optuna_storage import open_storage, study_storage

POINTS_RANGE = (5, 400)
LR_RANGE = (1e-6, 1e-2)


def search_space() -> dict:
    """Ray Tune distributions over the swept fields (converted to Optuna's by OptunaSearch)."""
    from ray import tune

    return {
        "points": tune.lograndint(POINTS_RANGE[0], POINTS_RANGE[1] + 1),  # upper is exclusive
        "lr": tune.loguniform(*LR_RANGE),
    }


def make_searcher(seed: int, storage_url: str | None, study_name: str, experiment_path: str):
    """A seeded TPE search recording pruned trials and user attributes (OptunaTrials); with
    ``storage_url`` the study persists in that database."""
    import optuna

    from forest_seg.sweep.optuna_trials import OptunaTrials

    storage = open_storage(storage_url) if storage_url else None
    return OptunaTrials(metric=METRIC, mode=MODE, sampler=optuna.samplers.TPESampler(seed=seed),
                        storage=storage, study_name=study_name, experiment_path=experiment_path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python sweeps/optuna_search.py", "Optuna TPE search with ASHA.")
    search = parser.add_argument_group("search")
    search.add_argument("--num-trials", type=int, default=None, help="trials (default 20)")
    search.add_argument("--point-strategy", default="balanced", help="strategy of every trial")
    search.add_argument("--seed", type=int, default=0, help="trial seed (tiles, split, init)")
    search.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed")
    search.add_argument("--study-storage", default=None,
                        help="Optuna storage URL (e.g. sqlite:///runs/optuna.db); default: "
                             "optuna.db in the experiment folder (local storage paths)")
    args = parse_flags(parser, argv)
    trials = args.num_trials if args.num_trials is not None else (3 if args.smoke_test else 20)
    if trials < 1:
        raise ConfigError(f"invalid --num-trials {trials}: expected an integer >= 1")
    # TPE learns from finished trials: by default two run at once, the rest wait for them
    launch = launch_from_args(args, max_concurrent=2)
    if not args.resume:
        launch = replace(launch, name=launch.name or default_name("optuna"))
    with connect(launch.address) as nodes:
        base = base_config(args, nodes, "optuna").replace(point_strategy=args.point_strategy,
                                                          seed=args.seed)
        searcher = None  # a resumed run restores its searcher with the experiment
        if not args.resume:  # built once the flags are valid: it creates the study's storage
            experiment = "/".join(launch.experiment("optuna"))
            searcher = make_searcher(args.sampler_seed,
                                     study_storage(experiment, args.study_storage),
                                     launch.name, experiment)
        study = Study(base=base, space=search_space(), search=searcher, samples=trials,
                      scheduler=scheduler_from_args(args), driver="optuna")
        return finish(run(study, launch))


if __name__ == "__main__":
    sys.exit(sweep_cli(main))
