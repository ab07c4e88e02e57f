"""Experiment tracking through Ray Tune's logger callbacks: MLflow or Weights & Biases.

Each is an optional extra (``pip install 'forest-seg-sweeps[mlflow]'`` / ``[wandb]``); asking
for one whose package is missing is one clear :class:`~forest_seg.errors.ConfigError`. Every
trial becomes a run named like its folder (``p50_lr1e-04_s0_<id>``) with its config as
parameters and its per-epoch numbers as metrics.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import ConfigError

TRACKERS = ("none", "mlflow", "wandb")
DEFAULT_MLFLOW_DIR = "mlruns"  # a local folder (file store) when --mlflow-uri is not given


def check_tracking(tracking: str) -> None:
    """ConfigError unless ``tracking`` is one of :data:`TRACKERS` with its package installed."""
    if tracking not in TRACKERS:
        raise ConfigError(f"invalid --tracking {tracking!r}: expected one of "
                          f"{', '.join(TRACKERS)}")
    if tracking != "none" and importlib.util.find_spec(tracking) is None:
        raise ConfigError(f"--tracking {tracking} needs the {tracking} package, which is not "
                          f"installed: pip install 'forest-seg-sweeps[{tracking}]'")


def mlflow_uri(uri: str | None) -> str:
    """The tracking URI: ``uri`` as given, or the local ``./mlruns`` folder as a file URI."""
    return uri if uri else Path(DEFAULT_MLFLOW_DIR).resolve().as_uri()


def tracking_callbacks(tracking: str, experiment: str, uri: str | None = None) -> list:
    """Ray Tune logger callbacks for ``tracking`` (one of :data:`TRACKERS`), logging to the
    MLflow experiment / W&B project ``experiment``. W&B runs offline unless ``WANDB_MODE`` says
    otherwise."""
    check_tracking(tracking)
    if tracking == "none":
        return []
    if tracking == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        return [MLflowLoggerCallback(tracking_uri=mlflow_uri(uri), experiment_name=experiment,
                                     save_artifact=False)]
    from ray.air.integrations.wandb import WandbLoggerCallback

    return [WandbLoggerCallback(project=experiment, mode=os.environ.get("WANDB_MODE",
                                                                         "offline"))]
