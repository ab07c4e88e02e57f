"""The results schema: an experiment's ``results.csv`` and ``history.csv`` columns, defined once,
and one trial's rows in them.

Shared by the sweep API (:mod:`forest_seg.sweep`, which writes the files while trials finish)
and by the analysis (which reads them, or rebuilds them from Ray Tune's own files after a
crash), so both apply one rule set:

- ``history.csv``: a row per trial per epoch, the :data:`HISTORY_COLUMNS` a trial reported
  (:func:`history_row`), its ``baseline_*`` keys and, in the row of its first report, its
  ``startup_*`` keys (:mod:`forest_seg.startup`);
- ``results.csv``: a row per trial: ``trial_id``, ``driver`` (the search that ran it:
  ``grid``, ``optuna``, ``pbt``, or the name a Study gives), the :data:`CONFIG_COLUMNS`, then
  :data:`RESULT_TAIL`, ``error`` (a failed trial's reason, ``"<Exception>: <message>"``; empty
  otherwise) and the ``baseline_*`` and ``best_<metric>`` columns;

- ``status``: ``DIVERGED`` if the last epoch diverged, else ``ERROR`` if the trial failed,
  else ``EARLY_STOPPED`` if it reached fewer epochs than planned, else ``COMPLETED``;
- config columns carry the TrainConfig field names, except that the planned ``epochs`` is
  written as ``max_epochs``, because ``epochs`` is the number of epochs reached;
- ``val_*`` are the last epoch's values: the headline is the final epoch's ``val_miou``;
- the best epoch is one coherent set: ``best_epoch`` is the epoch of the highest ``val_miou``
  (the first on a tie) and every ``best_<metric>`` (``best_val_miou``, ``best_val_iou``,
  ``best_val_loss``, ``best_train_loss``, ...) is that epoch's value. Picked on the validation
  set itself, these numbers are optimistic and are shown only labelled so;
- ``baseline_*`` keys of the per-epoch rows (constant per trial: the all-forest prediction, a
  colour lookup table built from the trial's own labels) are copied from the last row that has
  them;
- per-epoch rows re-reported after a retry from a checkpoint count once: the last report of
  each epoch number (:func:`unique_epochs`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .config import TrainConfig

RESULTS_FILE = "results.csv"
HISTORY_FILE = "history.csv"
STATUSES = ("COMPLETED", "EARLY_STOPPED", "DIVERGED", "ERROR")
BASELINE_PREFIX = "baseline_"  # the trial's no-training reference scores (forest_seg.baselines)
BASELINE_COLUMNS = ("baseline_all_forest_miou", "baseline_colour_miou")
# validation scores of an epoch: the loss and every key of SegmentationMetrics.compute()
VAL_COLUMNS = ("val_loss", "val_iou", "val_iou_nonforest", "val_miou", "val_dice",
               "val_precision", "val_recall", "val_accuracy")
TRAIN_TILES = "train_tiles"  # the trial's training tile count (what its labels cost)
# results.csv: the folder (relative to the experiment) of the checkpoint of the trial's best
# epoch; history.csv: CHECKPOINT, the checkpoint folder saved at that epoch, if any
BEST_CHECKPOINT = "best_checkpoint"
CHECKPOINT = "checkpoint"
HISTORY_COLUMNS = (
    "trial_id", "epoch", "train_loss", *VAL_COLUMNS, "lr", "epoch_time_s", "finished_at",
    "images_per_s",
    "data_time_s", "checkpoint_s", "diverged", "pretrained_loaded", TRAIN_TILES,
    *BASELINE_COLUMNS, CHECKPOINT,
)
# a trial's first report: where its start-up time went (forest_seg.startup); kept in history.csv
STARTUP_PREFIX = "startup_"
# config columns: the TrainConfig fields, the planned ``epochs`` written as ``max_epochs``
CONFIG_COLUMNS = tuple("max_epochs" if name == "epochs" else name
                       for name in TrainConfig.field_names())
DRIVER_COLUMN = "driver"
ERROR_COLUMN = "error"  # an ERROR trial's reason in one line
FINAL_METRICS = ("val_iou", "val_miou", "val_loss")
BEST_METRICS = ("best_val_iou", "best_val_miou", "best_val_loss")
# per-epoch keys whose value at the best epoch is recorded as best_<key>
BEST_PREFIXES = ("val_", "train_")
RESULT_TAIL = (
    "status", *FINAL_METRICS, "best_epoch", *BEST_METRICS, "epochs", "train_time_s",
    TRAIN_TILES,
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


# The key of a resumed trial's first report that carries the epochs its checkpoint had
# finished (a list of per-epoch metric dicts): the results writer records any it lacks.
RESTORED_EPOCHS = "restored_epochs"
# The key of a report that carries the warnings the trial raised since its last report (texts);
# the sweep prints each distinct one once.
TRIAL_WARNINGS = "trial_warnings"


def last_error_line(traceback_text: str) -> str | None:
    """An error's one-line reason from a traceback's text (Ray's ``error.txt``): its last
    non-empty line, the ``<module.Exception>: <message>`` line; None for empty text."""
    lines = [line.strip() for line in traceback_text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def history_row(trial_id: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The history.csv row of one reported epoch: its :data:`HISTORY_COLUMNS`, ``baseline_*``
    and ``startup_*`` keys (Ray's own bookkeeping keys dropped)."""
    row: dict[str, Any] = {"trial_id": str(trial_id)}
    row.update({k: v for k, v in metrics.items()
                if k in HISTORY_COLUMNS or k.startswith((BASELINE_PREFIX, STARTUP_PREFIX))})
    return row


def history_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns of history rows in schema order, unknown ones sorted after them."""
    present = {key for row in rows for key in row}
    known = [c for c in HISTORY_COLUMNS if c in present]
    return known + sorted(present - set(known))


def trial_status(rows: Sequence[Mapping[str, Any]], max_epochs: Any, errored: bool) -> str:
    """The status of a finished trial from its per-epoch rows (see the module docstring)."""
    return final_status(rows[-1] if rows else {}, len(rows), max_epochs, errored)


def final_status(last: Mapping[str, Any], epochs: int, max_epochs: Any, errored: bool) -> str:
    """The status of a finished trial from its last epoch's metrics (``{}`` for none) and the
    number of epochs it reached (see the module docstring)."""
    if _truthy(last.get("diverged")):
        return "DIVERGED"
    if errored:
        return "ERROR"
    if isinstance(max_epochs, (int, float)) and epochs < max_epochs:
        return "EARLY_STOPPED"
    return "COMPLETED"


def unique_epochs(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows with one row per ``epoch`` number, the last report of each, ordered by epoch.

    A trial retried from a checkpoint re-reports the epochs after that checkpoint; the later
    report is the one the run continued from. Rows without an ``epoch`` key are numbered by
    their position (1-based)."""
    latest: dict[float, Mapping[str, Any]] = {}
    for i, row in enumerate(rows, start=1):
        latest[_number(row.get("epoch", i), float(i))] = row
    return [latest[epoch] for epoch in sorted(latest)]


def best_epoch_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``best_epoch`` and every ``best_<metric>`` from the one epoch of the highest val mIoU.

    The first epoch wins a tie; with no finite ``val_miou`` the ``best_epoch`` and the
    :data:`BEST_METRICS` are NaN."""
    best: dict[str, Any] = {"best_epoch": math.nan, **dict.fromkeys(BEST_METRICS, math.nan)}
    scores = [_number(r.get("val_miou")) for r in rows]
    finite = [i for i, v in enumerate(scores) if math.isfinite(v)]
    if not finite:
        return best
    i = max(finite, key=lambda k: (scores[k], -k))
    row = rows[i]
    best["best_epoch"] = int(_number(row.get("epoch", i + 1), float(i + 1)))
    for key, value in row.items():
        if key.startswith(BEST_PREFIXES):
            best[f"best_{key}"] = _number(value)
    return best


def baseline_values(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Every ``baseline_*`` key of the rows with its value in the last row that has it."""
    values: dict[str, float] = {}
    for row in rows:
        values.update({k: _number(v) for k, v in row.items() if k.startswith(BASELINE_PREFIX)})
    return values


def trial_summary(
    trial_id: str,
    config: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    errored: bool = False,
    train_time_s: float | None = None,
    driver: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The results.csv row of one trial from its config and its per-epoch metric rows.

    Columns: ``trial_id``, ``driver`` (when given), the config columns, ``status``, the final
    ``val_iou``, ``val_miou``, ``val_loss``, ``best_epoch`` and the ``best_*`` metrics of that
    epoch, ``epochs`` (reached),
    ``train_time_s`` (default: the sum of the rows' ``epoch_time_s``), ``train_tiles`` (the
    training tile count the trial reported; NaN if none), ``error`` (the failed trial's
    one-line reason, None otherwise), then the ``baseline_*`` values (see the module
    docstring). ``rows`` should hold one row per epoch (:func:`unique_epochs`).
    """
    columns = config_columns(config)
    last = rows[-1] if rows else {}
    summary: dict[str, Any] = {"trial_id": str(trial_id)}
    if driver is not None:
        summary[DRIVER_COLUMN] = driver
    summary.update(columns)
    summary["status"] = trial_status(rows, columns.get("max_epochs"), errored)
    for key in FINAL_METRICS:
        summary[key] = _number(last.get(key))
    summary.update(best_epoch_metrics(rows))
    summary["epochs"] = len(rows)
    if train_time_s is None:
        train_time_s = sum(_number(r.get("epoch_time_s"), 0.0) for r in rows)
    summary["train_time_s"] = train_time_s
    summary[TRAIN_TILES] = _number(next((r[TRAIN_TILES] for r in reversed(rows)
                                         if TRAIN_TILES in r), None))
    summary[ERROR_COLUMN] = error if errored else None
    summary.update(baseline_values(rows))
    return summary


def best_checkpoint(rows: Sequence[Mapping[str, Any]],
                    exists: Callable[[str], bool] = lambda folder: True) -> str | None:
    """The :data:`CHECKPOINT` folder of the epoch of highest ``val_miou`` among ``rows`` that
    saved one still there (``exists``); the latest saved one when no epoch has a score (a
    diverged trial); None when none was saved."""
    saved = [r for r in rows if isinstance(r.get(CHECKPOINT), str) and r[CHECKPOINT]
             and exists(r[CHECKPOINT])]
    if not saved:
        return None
    scored = [r for r in saved if math.isfinite(_number(r.get("val_miou")))]
    if not scored:
        return saved[-1][CHECKPOINT]
    return max(scored, key=lambda r: _number(r["val_miou"]))[CHECKPOINT]


def _number(value: Any, default: float = math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "1.0")
    return bool(value) if value is not None else False
