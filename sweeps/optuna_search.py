"""Optuna (TPE) search over points per image and learning rate, with ASHA early stopping.

    python sweeps/optuna_search.py --num-trials 20
    python sweeps/optuna_search.py --smoke-test
    python sweeps/optuna_search.py --study-storage sqlite:///runs/optuna.db --name tpe-1
    optuna-dashboard sqlite:///runs/optuna.db      # then open the study named like the run

The space: points an integer on a log scale in [5, 400], lr log-uniform in [1e-6, 1e-2].
Each trial runs the same trainable as the grid and the experiment directory holds the same
results.csv / history.csv.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from forest_seg.errors import ConfigError
from forest_seg.sweep import METRIC, MODE, Study, connect, default_name, run
from forest_seg.sweep.exits import finish, sweep_cli
from forest_seg.sweep.flags import base_config, build_parser, launch_from_args, scheduler_from_args

POINTS_RANGE = (5, 400)
LR_RANGE = (1e-6, 1e-2)


def search_space() -> dict:
    """Ray Tune distributions over the swept fields (converted to Optuna's by OptunaSearch)."""
    from ray import tune

    return {
        "points": tune.lograndint(POINTS_RANGE[0], POINTS_RANGE[1] + 1),  # upper is exclusive
        "lr": tune.loguniform(*LR_RANGE),
    }


def make_searcher(seed: int, study_storage: str | None, study_name: str | None):
    """A seeded TPE OptunaSearch; with ``study_storage`` the study persists in that database."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    storage = None
    if study_storage:
        try:
            storage = optuna.storages.RDBStorage(study_storage)
        except Exception as exc:  # SQLAlchemy raises several types for a bad URL
            raise ConfigError(f"invalid --study-storage {study_storage!r}: {exc}") from None
    return OptunaSearch(metric=METRIC, mode=MODE, sampler=optuna.samplers.TPESampler(seed=seed),
                        storage=storage, study_name=study_name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python sweeps/optuna_search.py", "Optuna TPE search with ASHA.")
    search = parser.add_argument_group("search")
    search.add_argument("--num-trials", type=int, default=None, help="trials (default 20)")
    search.add_argument("--point-strategy", default="balanced", help="strategy of every trial")
    search.add_argument("--seed", type=int, default=0, help="trial seed (tiles, split, init)")
    search.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed")
    search.add_argument("--study-storage", default=None,
                        help="Optuna storage URL (e.g. sqlite:///runs/optuna.db)")
    args = parser.parse_args(argv)
    trials = args.num_trials if args.num_trials is not None else (3 if args.smoke_test else 20)
    if trials < 1:
        raise ConfigError(f"invalid --num-trials {trials}: expected an integer >= 1")
    # TPE learns from finished trials: by default two run at once, the rest wait for them
    launch = launch_from_args(args, max_concurrent=2)
    searcher = None
    if not args.resume:  # a resumed run restores its searcher with the experiment
        launch = replace(launch, name=launch.name or default_name("optuna"))
        searcher = make_searcher(args.sampler_seed, args.study_storage, launch.name)
    with connect(launch.address) as nodes:
        base = base_config(args, nodes, "optuna").replace(point_strategy=args.point_strategy,
                                                          seed=args.seed)
        study = Study(base=base, space=search_space(), search=searcher, samples=trials,
                      scheduler=scheduler_from_args(args), driver="optuna")
        return finish(run(study, launch))


if __name__ == "__main__":
    sys.exit(sweep_cli(main))
