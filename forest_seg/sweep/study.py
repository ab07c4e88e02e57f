"""The typed values of a sweep: a :class:`Study` (what to run) and a :class:`Launch` (where and
how). Building them imports no Ray; :func:`forest_seg.sweep.run` runs them."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import ConfigError
from .tracking import check_tracking

METRIC, MODE = "val_miou", "max"  # what schedulers and searchers optimise
_DRIVER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ClipToRange:
    """A ``custom_explore_fn`` for Ray Tune's PopulationBasedTraining: keeps each perturbed
    hyperparameter within its ``(low, high)`` bounds (Ray multiplies a continuous value by
    0.8 or 1.2 and does not clip it to the search domain). It lives in the package so that a
    resumed experiment can unpickle it from any folder."""

    bounds: tuple[tuple[str, float, float], ...]

    def __call__(self, config: dict) -> dict:
        for name, low, high in self.bounds:
            config[name] = min(max(config[name], low), high)
        return config


@dataclass(frozen=True)
class Asha:
    """ASHA early stopping on val mIoU. Validation mIoU after one epoch is noisy, so by default
    (``grace_period=None``) every trial runs a third of its epochs (rounded up) before ASHA
    may stop it."""

    grace_period: int | None = None
    reduction_factor: float = 2.0

    def grace(self, epochs: int) -> int:
        """The grace period for trials of ``epochs`` epochs; ConfigError if invalid."""
        grace = self.grace_period or max(1, math.ceil(epochs / 3))
        if not 1 <= grace <= epochs or self.reduction_factor <= 1:
            raise ConfigError(f"invalid --grace-period {grace} / --reduction-factor "
                              f"{self.reduction_factor}: expected 1 <= grace <= epochs "
                              f"({epochs}) and a reduction factor > 1")
        return grace

    def build(self, epochs: int):
        """Ray Tune's ASHAScheduler for trials of ``epochs`` epochs."""
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(max_t=epochs, grace_period=self.grace(epochs),
                             reduction_factor=self.reduction_factor)


@dataclass(frozen=True)
class Study:
    """What a sweep runs: every trial is ``base`` with its swept fields changed.

    Either ``trials``, explicit trials (a grid: each a dict of TrainConfig fields that differ
    from ``base``), or ``space``, Ray Tune distributions (``tune.loguniform`` ...) or constant
    values over TrainConfig fields, sampled ``samples`` times by ``search`` (a Ray Tune
    searcher; None = random sampling). ``scheduler``: :class:`Asha` (the default), None
    (FIFO: every trial runs all its epochs) or a Ray Tune scheduler (e.g. Population Based
    Training). ``keep_checkpoints`` per trial (None = all: PBT restores other trials' older
    ones). ``driver`` names the search in results.csv's ``driver`` column and in the default
    experiment name ``<driver>-<time>``. ``random_seed`` seeds Python's ``random`` before the
    run (Ray's PBT draws its exploit/explore choices from it). A resumed run restores its
    trials, searcher and scheduler from the experiment; ``base`` is checked, not re-applied.
    """

    base: TrainConfig = field(default_factory=TrainConfig)
    trials: Sequence[Mapping[str, Any]] | None = None
    space: Mapping[str, Any] | None = None
    search: Any = None
    samples: int | None = None
    scheduler: Any = Asha()
    keep_checkpoints: int | None = 2
    driver: str = "sweep"
    random_seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.base, TrainConfig):
            raise ConfigError(f"Study.base: expected a TrainConfig, got {type(self.base).__name__}")
        if (self.trials is None) == (self.space is None):
            raise ConfigError("Study: give either trials (a grid) or space (a search), not both")
        if self.trials is not None and not self.trials:
            raise ConfigError("Study.trials: expected at least one trial")
        if self.space is not None and (self.samples is None or self.samples < 1):
            raise ConfigError(f"invalid samples {self.samples}: a search needs samples >= 1")
        if not _DRIVER_NAME.match(self.driver):
            raise ConfigError(f"invalid driver {self.driver!r}: expected a lower-case name "
                              "(letters, digits, _), e.g. grid")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ConfigError(f"invalid keep_checkpoints {self.keep_checkpoints}: expected >= 1 "
                              "or None (all)")
        self.trial_configs()  # every trial valid before any trial starts

    def trial_configs(self) -> list[TrainConfig]:
        """The grid's trials as TrainConfigs, or, for a search, the base with the space's
        constant values (ConfigError naming the first invalid field)."""
        if self.trials is not None:
            return [self.base.replace(**dict(trial)) for trial in self.trials]
        constants = {k: v for k, v in (self.space or {}).items() if not hasattr(v, "sample")}
        unknown = sorted(set(self.space or {}) - set(TrainConfig.field_names()))
        if unknown:
            raise ConfigError(f"Study.space: unknown config key(s) {', '.join(unknown)}")
        return [self.base.replace(**constants)]

    def param_space(self) -> dict[str, Any]:
        """Ray Tune's param_space: the base config with the space over it. A grid's varied
        fields are given as a choice of the values its trials take, which each trial then
        fixes (a base value there makes Ray warn once per trial that differs from it)."""
        space = {**self.base.to_dict(), **(self.space or {})}
        if self.trials is None:
            return space
        from ray import tune

        choices = distinct_values(self.trial_points())
        return {**space, **{key: tune.choice(v) for key, v in choices.items()}}

    def trial_points(self) -> list[dict[str, Any]]:
        """A grid's trials, each with every varied field set (the base's value where a trial
        leaves it out): Ray samples a field a point leaves out from the param space."""
        varied = list(self.trial_values())
        base = self.base.to_dict()
        return [{**{k: base[k] for k in varied}, **dict(trial)} for trial in self.trials or ()]

    def trial_values(self) -> dict[str, list]:
        """A grid's fields and the distinct values its trials give them, in order."""
        return distinct_values(self.trials or ())

    def varying_keys(self) -> list[str]:
        """The fields that tell trials apart (trial names, progress lines): a grid's fields
        that take several values, a search's sampled ones, and ``seed``."""
        if self.trials is not None:
            keys = [k for k, v in self.trial_values().items() if len(v) > 1 and k != "seed"]
        else:
            keys = [k for k, v in (self.space or {}).items() if hasattr(v, "sample")]
        return [*keys, "seed"]

    def trial_count(self) -> int:
        """How many trials the study runs at most."""
        return len(self.trials) if self.trials is not None else int(self.samples)

    def description(self) -> dict[str, Any]:
        """A JSON-friendly summary for the run's first line."""
        if self.trials is not None:
            return {"trials": len(self.trials), "varies": self.trial_values()}
        return {"samples": self.samples, "space": {k: str(v) for k, v in self.space.items()},
                "search": type(self.search).__name__ if self.search is not None else "random"}


@dataclass(frozen=True)
class Launch:
    """Where and how a sweep runs.

    ``address``: the Ray cluster to join (e.g. ``auto``); None starts a local Ray on 127.0.0.1
    (either only when this process is not connected to Ray yet). ``cpus_per_trial`` default: 1
    on CPU-only clusters, 2 with GPUs; ``gpus_per_trial`` default: 1 when the cluster has GPUs,
    else 0 (a fraction packs trials on one GPU). ``max_concurrent``: at most that many trials
    at once, whatever the searcher (a Population Based Training population must fit in it);
    None: as resources allow. ``max_failures``: retries of a failed trial from its last
    checkpoint (a worker that died, a runtime error; a bad input is not retried).
    ``storage_path``: a local folder or an ``s3://...`` URI; ``name`` the experiment's folder in
    it (default ``<driver>-<time>``); ``resume`` continues the experiment ``name`` (default:
    the newest of the driver's). ``trust_storage`` lets ``resume`` load a local experiment
    folder owned by another user (resuming unpickles Ray's experiment state from it:
    :mod:`forest_seg.sweep.trust`). ``wait_for_nodes`` skips the check that some node can run
    a trial (autoscaling clusters add nodes on demand). ``settings``: the driver's flag values,
    saved as the experiment's ``sweep.json`` when a new sweep starts
    (:mod:`forest_seg.sweep.config_file`; None: no file).
    """

    address: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    max_failures: int = 2
    storage_path: str = "./runs"
    name: str | None = None
    resume: bool = False
    trust_storage: bool = False
    wait_for_nodes: bool = False
    verbose: int = 0
    tracking: str = "none"
    mlflow_uri: str | None = None
    settings: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"invalid --max-concurrent {self.max_concurrent}: expected >= 1")
        if self.max_failures < 0:
            raise ConfigError(f"invalid --max-failures {self.max_failures}: expected >= 0")
        check_tracking(self.tracking)

    def experiment(self, driver: str) -> tuple[str, str]:
        """(storage path, experiment name); ``resume`` without ``name`` takes the newest
        ``<driver>-*`` experiment."""
        storage = self.storage_path
        if "://" not in storage:
            storage = str(Path(storage).resolve())
        if self.name:
            return storage, self.name
        if self.resume:
            if "://" in storage:
                raise ConfigError(f"--resume on {storage} needs --name (the experiment to "
                                  "resume)")
            found = sorted(Path(storage).glob(f"{driver}-*/tuner.pkl"),
                           key=lambda p: p.stat().st_mtime)
            if not found:
                raise ConfigError(f"--resume: no {driver} experiment to resume under {storage}")
            return storage, found[-1].parent.name
        return storage, default_name(driver)


def distinct_values(trials: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Each field the ``trials`` set and the distinct values they give it, in order."""
    values: dict[str, list] = {}
    for trial in trials:
        for key, value in trial.items():
            if value not in values.setdefault(key, []):
                values[key].append(value)
    return values


def default_name(driver: str) -> str:
    """``<driver>-<YYYYmmdd-HHMMSS>``, the default experiment name."""
    return f"{driver}-{time.strftime('%Y%m%d-%H%M%S')}"
