"""``run(study, launch)``: the one way to run a sweep, from a driver or a notebook."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from ..results import HISTORY_FILE, RESULTS_FILE
from .config_file import SWEEP_FILE, save_sweep_file
from .files import read_csv
from .local_ray import local_ray
from .lock import experiment_lock
from .stopping import SweepStopped, stop_on_signals, stop_requested
from .study import METRIC, MODE, Launch, Study
from .tables import EXPERIMENT
from .trust import check_owner
from .warm import decode_tiles

TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for the driver of a Ray job
# what a sweep that started leaves in its experiment folder
RUN_MARKERS = ("tuner.pkl", RESULTS_FILE, HISTORY_FILE, SWEEP_FILE)


def job_cluster() -> str | None:
    """The cluster of a driver that runs as a Ray job (Ray gives a job's driver its job
    config and ``RAY_ADDRESS``), else None."""
    if JOB_CONFIG_ENV in os.environ:
        return os.environ.get("RAY_ADDRESS") or "auto"
    return None


@contextmanager
def connect(address: str | None = None,
            num_cpus: int | None = None) -> Iterator[list[dict[str, float]]]:
    """Be connected to Ray for the block; yields the CPU and GPU counts of each alive node.

    Joins ``address``; else, in a driver run as a Ray job (``ray job submit -- python
    sweeps/grid.py``), the job's cluster (the ``RAY_ADDRESS`` Ray sets for it); else starts a
    new local Ray with ``num_cpus`` CPUs (None = all) whose addresses stay on 127.0.0.1 (never
    one that a stray ``RAY_ADDRESS`` or a ``ray start`` on this machine points at), its
    workers importing the trial code as they start and hosting the first trials
    (:mod:`.local_ray`). Only when this process is not connected yet; a joined cluster gets no
    start-up options (a running cluster rejects them). What it started, it stops on leaving
    the block (an existing connection is used as it is and kept).
    """
    import ray

    address = address or job_cluster()
    with ExitStack() as connection:
        if not ray.is_initialized() and address is None:
            # Ray enables token authentication for a new local cluster (its default, kept)
            # and says so on every start: a notice, not news, so its logger is quieted
            logging.getLogger(TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
            connection.enter_context(local_ray(num_cpus))
        elif not ray.is_initialized():
            print(f"joining the Ray cluster at {address}", flush=True)
            ray.init(address=address, log_to_driver=False)
            connection.callback(ray.shutdown)
        yield [{"CPU": n["Resources"].get("CPU", 0.0), "GPU": n["Resources"].get("GPU", 0.0)}
               for n in ray.nodes() if n.get("Alive")]


def checkpoint_config(keep: int | None):
    """Ray Tune's CheckpointConfig: with ``keep``, the ``keep`` checkpoints of highest
    ``val_miou`` (Ray also keeps the latest, to resume from); None keeps them all (PBT)."""
    from ray import tune

    if keep is None:
        return tune.CheckpointConfig()
    return tune.CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=METRIC,
                                 checkpoint_score_order=MODE)


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
    from ..tiles import resolve_data_root

    base = study.base
    data = str(resolve_data_root(base.data).resolve())
    val = None if base.val_data is None else str(resolve_data_root(base.val_data).resolve())
    return replace(study, base=base.replace(data=data, val_data=val))


def is_population_based(scheduler) -> bool:
    """Whether ``scheduler`` is Ray Tune's Population Based Training (or a subclass)."""
    from ray.tune.schedulers import PopulationBasedTraining

    return isinstance(scheduler, PopulationBasedTraining)


def check_new(experiment_path: str) -> None:
    """ConfigError when the local folder ``experiment_path`` already holds a sweep (Ray's
    experiment state, results files or the sweep.json a started sweep writes first): a new
    sweep would overwrite its results files. What a driver prepares in it before ``run`` (the
    lock, an Optuna study file) does not count."""
    folder = Path(experiment_path)
    if "://" in experiment_path or not folder.is_dir():
        return
    if any(entry.name in RUN_MARKERS or entry.name.startswith("experiment_state")
           for entry in folder.iterdir()):
        raise ConfigError(f"experiment {experiment_path} exists: pass --resume to continue "
                          "it, or pick another --name")


def run(study: Study, launch: Launch | None = None) -> pd.DataFrame:
    """Run (or, with ``launch.resume``, continue) ``study``; returns the results frame, one
    row per trial as in the experiment's results.csv (:mod:`forest_seg.results`), with the
    experiment's path in ``frame.attrs["experiment"]``.

    Ray is started (or joined) only when this process is not connected yet, and what was
    started is shut down again, so a notebook can call ``run`` any number of times. Bad
    values raise :class:`~forest_seg.errors.ConfigError` before any trial starts: among them
    a ``name`` that exists without ``resume`` (:func:`check_new`), and a resumed local
    experiment folder owned by another user without ``launch.trust_storage`` (:mod:`.trust`).
    The driver holds the experiment's lock while it runs (:mod:`.lock`: a second driver is
    refused). SIGINT, SIGTERM or a results file that cannot be written stop the sweep
    gracefully (:mod:`.stopping`) and raise
    :class:`~forest_seg.sweep.stopping.SweepStopped` once Ray has saved the experiment.
    """
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from .callbacks import sweep_callbacks
    from .concurrency import limit_concurrency
    from .progress import Progress, TrialName, ray_console
    from .torchless import import_tensorboardx, trainable
    from .tracking import tracking_callbacks

    launch = launch or Launch()
    # Snapshot the experiment state every second (Ray's default: every >= 10 s), so a driver
    # killed right after a trial finished does not rerun that trial on resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    with connect(launch.address) as nodes, ExitStack() as held:
        resources = trial_resources(launch, nodes)
        study = resolve_data(study)
        decode_tiles(study)
        storage, name = launch.experiment(study.driver)
        path = f"{storage}/{name}"
        if launch.resume and not launch.trust_storage:
            check_owner(path)
        held.enter_context(experiment_lock(path))
        if not launch.resume:
            check_new(path)
        shown = {k: v for k, v in asdict(launch).items()
                 if v is not None and v is not False and k != "settings"}
        print(f"{study.driver}: " + json.dumps(
            {"experiment": path, "resources": resources, "launch": shown,
             **study.description(), "base": study.base.to_dict()}, default=str), flush=True)
        if launch.settings is not None and not launch.resume:
            save_sweep_file(path, launch.settings)
        runnable = tune.with_resources(trainable, resources)
        if study.random_seed is not None:
            random.seed(study.random_seed)
        if launch.resume:
            if not tune.Tuner.can_restore(path):
                raise ConfigError(f"--resume: {path} holds no Ray Tune experiment to resume")
            try:
                tuner = tune.Tuner.restore(path, runnable, resume_unfinished=True,
                                           resume_errored=True)
            except Exception as exc:  # a truncated or foreign state: many types (EOF, pickle)
                raise ConfigError(f"--resume: cannot load the experiment state in {path} "
                                  f"({type(exc).__name__}: {exc})") from None
        else:
            search, samples = study.search, study.samples
            if study.trials is not None:
                search = BasicVariantGenerator(points_to_evaluate=study.trial_points())
                samples = len(study.trials)
            scheduler = study.scheduler
            if hasattr(scheduler, "build"):
                scheduler = scheduler.build(study.base.epochs)
            search = limit_concurrency(search, launch.max_concurrent, scheduler, samples)
            names = TrialName(study.varying_keys())
            tuner = tune.Tuner(
                runnable,
                param_space=study.param_space(),
                tune_config=tune.TuneConfig(
                    metric=METRIC, mode=MODE, scheduler=scheduler, search_alg=search,
                    num_samples=samples,
                    trial_name_creator=names, trial_dirname_creator=names,
                    # a worker process runs trial after trial: imports, decoded tiles and
                    # device context stay warm (every trial asks the same resources); not
                    # under PBT, whose exploits restore through Ray's actor reset (a reused
                    # worker there skipped epochs of a trial's own lineage)
                    reuse_actors=not is_population_based(scheduler),
                ),
                run_config=tune.RunConfig(
                    name=name, storage_path=storage, verbose=launch.verbose,
                    failure_config=tune.FailureConfig(max_failures=launch.max_failures),
                    checkpoint_config=checkpoint_config(study.keep_checkpoints),
                    callbacks=[*sweep_callbacks(path, study.driver),
                               Progress(study.trial_count(), study.base.epochs,
                                        study.varying_keys()),
                               *tracking_callbacks(launch.tracking, name, launch.mlflow_uri)],
                ),
            )
        print(f"{study.driver}: TensorBoard: tensorboard --logdir {path}", flush=True)
        import_tensorboardx()
        with stop_on_signals(), ray_console(launch.verbose):
            try:
                tuner.fit()
            except SweepStopped as stopped:  # outside the main thread: no graceful stop
                raise SweepStopped(stopped.request, path) from None
            if stop_requested() is not None:
                raise SweepStopped(stop_requested(), path)
    results = read_csv(path, RESULTS_FILE)
    if results is None:
        results = pd.DataFrame()
    results.attrs[EXPERIMENT] = path
    return results
