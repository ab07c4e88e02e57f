"""One trial's rows in an experiment's ``results.csv`` and ``history.csv``.

Shared by the sweep drivers (which write the files while trials finish) and by the analysis
(which rebuilds them from Ray Tune's own files after a crash), so both apply one rule set:

- ``status``: ``DIVERGED`` if the last epoch diverged, else ``ERROR`` if the trial failed,
  else ``EARLY_STOPPED`` if it reached fewer epochs than planned, else ``COMPLETED``;
- config columns carry the TrainConfig field names, except that the planned ``epochs`` is
  written as ``max_epochs``, because ``epochs`` is the number of epochs reached;
- ``val_*`` are the last epoch's values and ``best_val_*`` the best over epochs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

RESULTS_FILE = "results.csv"
HISTORY_FILE = "history.csv"
STATUSES = ("COMPLETED", "EARLY_STOPPED", "DIVERGED", "ERROR")
HISTORY_COLUMNS = (
    "trial_id", "epoch", "train_loss", "val_loss", "val_iou", "val_miou", "val_dice",
    "val_precision", "val_recall", "val_accuracy", "lr", "epoch_time_s", "images_per_s",
    "data_time_s", "diverged",
)
RESULT_TAIL = (
    "status", "val_iou", "val_miou", "val_loss", "best_val_iou", "best_val_miou", "epochs",
    "train_time_s",
)


def config_columns(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial config as results.csv columns: ``epochs`` renamed ``max_epochs``, nested values
    as JSON text."""
    columns = {}
    for key, value in config.items():
        if isinstance(value, (dict, list, tuple)):
            value = json.dumps(value, sort_keys=True)
        columns["max_epochs" if key == "epochs" else key] = value
    return columns


def trial_status(rows: Sequence[Mapping[str, Any]], max_epochs: Any, errored: bool) -> str:
    """The status of a finished trial from its per-epoch rows (see the module docstring)."""
    if rows and _truthy(rows[-1].get("diverged")):
        return "DIVERGED"
    if errored:
        return "ERROR"
    if isinstance(max_epochs, (int, float)) and len(rows) < max_epochs:
        return "EARLY_STOPPED"
    return "COMPLETED"


def trial_summary(
    trial_id: str,
    config: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    errored: bool = False,
    train_time_s: float | None = None,
) -> dict[str, Any]:
    """The results.csv row of one trial from its config and its per-epoch metric rows.

    ``train_time_s`` defaults to the sum of the rows' ``epoch_time_s``.
    """
    columns = config_columns(config)
    last = rows[-1] if rows else {}
    summary: dict[str, Any] = {"trial_id": str(trial_id), **columns}
    summary["status"] = trial_status(rows, columns.get("max_epochs"), errored)
    for key in ("val_iou", "val_miou", "val_loss"):
        summary[key] = _number(last.get(key))
    for key in ("val_iou", "val_miou"):
        values = [v for v in (_number(r.get(key)) for r in rows) if not math.isnan(v)]
        summary[f"best_{key}"] = max(values) if values else math.nan
    summary["epochs"] = len(rows)
    if train_time_s is None:
        train_time_s = sum(_number(r.get("epoch_time_s"), 0.0) for r in rows)
    summary["train_time_s"] = train_time_s
    return summary


def _number(value: Any, default: float = math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "1.0")
    return bool(value) if value is not None else False
