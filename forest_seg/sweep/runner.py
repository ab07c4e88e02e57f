"""``run(study, launch)``: the one way to run a sweep, from a driver or a notebook."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace

import pandas as pd

from ..errors import ConfigError
from ..results import RESULTS_FILE
from .files import read_csv
from .study import METRIC, MODE, Launch, Study
from .tables import EXPERIMENT
from .warm import decode_tiles


@contextmanager
def connect(address: str | None = None) -> Iterator[list[dict[str, float]]]:
    """Be connected to Ray for the block; yields the CPU and GPU counts of each alive node.

    Joins ``address``, or starts a local Ray whose addresses stay on 127.0.0.1, only when
    this process is not connected yet, and then shuts down on leaving the block what it
    started (an existing connection is used as it is and kept).
    """
    import ray

    started = not ray.is_initialized()
    if started and address is None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False,
                 object_store_memory=256 * 1024**2, log_to_driver=False)
    elif started:
        ray.init(address=address, log_to_driver=False)
    try:
        yield [{"CPU": n["Resources"].get("CPU", 0.0), "GPU": n["Resources"].get("GPU", 0.0)}
               for n in ray.nodes() if n.get("Alive")]
    finally:
        if started:
            ray.shutdown()


def trial_resources(launch: Launch, nodes: list[dict[str, float]]) -> dict[str, float]:
    """CPUs and GPUs per trial; an impossible request is an immediate ConfigError."""
    has_gpu = any(n["GPU"] > 0 for n in nodes)
    gpus = launch.gpus_per_trial if launch.gpus_per_trial is not None else float(has_gpu)
    cpus = launch.cpus_per_trial if launch.cpus_per_trial is not None else (
        2.0 if gpus else 1.0)
    if cpus < 0 or gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise ConfigError(f"invalid --cpus-per-trial {cpus} / --gpus-per-trial {gpus}: expected "
                          ">= 0, and a GPU fraction only below 1")
    fits = any(n["CPU"] >= cpus and n["GPU"] >= gpus for n in nodes)
    if not fits and not launch.wait_for_nodes:
        described = ", ".join(f"{n['CPU']:g} CPU/{n['GPU']:g} GPU" for n in nodes) or "none"
        raise ConfigError(
            f"no node of the Ray cluster can run a trial of --cpus-per-trial {cpus:g} "
            f"--gpus-per-trial {gpus:g} (nodes: {described}); lower the request, or pass "
            "--wait-for-nodes on an autoscaling cluster"
        )
    return {"cpu": cpus, "gpu": gpus}


def resolve_data(study: Study) -> Study:
    """The study with its base's ``data`` and ``val_data`` as absolute dataset roots.

    Resolving ``data`` here generates the embedded synthetic dataset once, in the driver,
    before any trial starts, and gives the trials an absolute path.
    """
    from ..data import resolve_data_root

    base = study.base
    data = str(resolve_data_root(base.data).resolve())
    val = None if base.val_data is None else str(resolve_data_root(base.val_data).resolve())
    return replace(study, base=base.replace(data=data, val_data=val))


def run(study: Study, launch: Launch | None = None) -> pd.DataFrame:
    """Run (or, with ``launch.resume``, continue) ``study``; returns the results frame, one
    row per trial as in the experiment's results.csv (:mod:`forest_seg.results`), with the
    experiment's path in ``frame.attrs["experiment"]``.

    Ray is started (or joined) only when this process is not connected yet, and what was
    started is shut down again, so a notebook can call ``run`` any number of times. Bad
    values raise :class:`~forest_seg.errors.ConfigError` before any trial starts.
    """
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from ..train import trainable
    from .callbacks import ResultsFiles

    launch = launch or Launch()
    # Snapshot the experiment state every second (Ray's default: every >= 10 s), so a driver
    # killed right after a trial finished does not rerun that trial on resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    with connect(launch.address) as nodes:
        resources = trial_resources(launch, nodes)
        study = resolve_data(study)
        decode_tiles(study)
        storage, name = launch.experiment(study.driver)
        path = f"{storage}/{name}"
        shown = {k: v for k, v in asdict(launch).items() if v is not None and v is not False}
        print(f"{study.driver}: " + json.dumps(
            {"experiment": path, "resources": resources, "launch": shown,
             **study.description(), "base": study.base.to_dict()}, default=str), flush=True)
        runnable = tune.with_resources(trainable, resources)
        if study.random_seed is not None:
            random.seed(study.random_seed)
        if launch.resume:
            if not tune.Tuner.can_restore(path):
                raise ConfigError(f"--resume: {path} holds no Ray Tune experiment to resume")
            tuner = tune.Tuner.restore(path, runnable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            search, samples = study.search, study.samples
            if study.trials is not None:
                search = BasicVariantGenerator(points_to_evaluate=[dict(t) for t in study.trials])
                samples = len(study.trials)
            scheduler = study.scheduler
            if hasattr(scheduler, "build"):
                scheduler = scheduler.build(study.base.epochs)
            tuner = tune.Tuner(
                runnable,
                param_space=study.param_space(),
                tune_config=tune.TuneConfig(
                    metric=METRIC, mode=MODE, scheduler=scheduler, search_alg=search,
                    num_samples=samples, max_concurrent_trials=launch.max_concurrent,
                    # a worker process runs trial after trial: imports, decoded tiles and
                    # device context stay warm (every trial asks the same resources)
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=name, storage_path=storage, verbose=launch.verbose,
                    failure_config=tune.FailureConfig(max_failures=launch.max_failures),
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=study.keep_checkpoints),
                    callbacks=[ResultsFiles(path, study.driver)],
                ),
            )
        tuner.fit()
    results = read_csv(path, RESULTS_FILE)
    if results is None:
        results = pd.DataFrame()
    results.attrs[EXPERIMENT] = path
    return results
