"""Sweeps as a typed Python API: the one way to run a sweep, from a driver or a notebook.

A :class:`Study` says what to run (a base :class:`~forest_seg.config.TrainConfig` and the
trials of a grid, or a search space with a searcher and a sample count; the scheduler; the
checkpoints to keep; the driver's name), a :class:`Launch` where and how (cluster address,
resources per trial, concurrency, retries, storage, name, resume), and :func:`run` runs it
and returns the results frame::

    from forest_seg.sweep import Launch, Study, preset_config, run

    study = Study(base=preset_config("smoke"), driver="notebook",
                  trials=[{"points": p, "seed": s} for p in (10, 50) for s in (0, 1)])
    results = run(study, Launch(storage_path="runs", name="points"))
    results.groupby("points")["val_miou"].mean()

Building the values imports no Ray. Ray objects an experiment pickles (the trainable, the
results callback) live in this package, so ``tune.Tuner.restore(path, trainable)`` and
``tune.ExperimentAnalysis(path)`` work from any folder. Modules: ``study`` (the values),
``presets``, ``runner`` (Ray start, resources, Tuner), ``concurrency`` (the trial limit for
every searcher), ``callbacks`` (results.csv, history.csv), ``trial_errors`` (a failure's
reason, no retry of bad input), ``progress`` (the console, trial names), ``tracking`` (MLflow,
W&B), ``until_resolved`` (seeds added until comparisons resolve), ``stopping`` (graceful stops
on SIGINT/SIGTERM or a failed write: :class:`SweepStopped`), ``lock`` (one driver per
experiment), ``trust`` (no resume from another user's folder), ``exits`` (how a driver ends:
the closing table and a truthful exit status), ``files``, ``tables`` (the closing text),
``flags`` (the drivers' shared flags), ``config_file`` (``--config FILE`` and
the experiment's sweep.json), ``optuna_trials`` (the Optuna searcher that records pruned
trials) and ``optuna_storage`` (where its study lives).
"""

from .presets import PRESETS, preset_config
from .runner import connect, run
from .stopping import SweepStopped
from .study import METRIC, MODE, Asha, Launch, Study, default_name
from .tables import closing_text

__all__ = ["METRIC", "MODE", "PRESETS", "Asha", "Launch", "Study", "SweepStopped",
           "closing_text", "connect", "default_name", "preset_config", "run"]
