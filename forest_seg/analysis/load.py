"""Experiment directories -> a trials DataFrame and an epochs DataFrame.

An experiment directory written by ``sweeps/*.py`` holds ``results.csv`` (a row per trial) and
``history.csv`` (a row per trial per epoch). When either is missing (a sweep that crashed before
writing them) both frames are rebuilt from Ray Tune's per-trial folders: each immediate
subfolder holding ``params.json`` (the trial's config) and ``result.json`` (JSON lines, one per
reported epoch). A truncated or malformed file is never read as valid: it is rebuilt from
those folders when they exist (said in one warning), else an error names its file and line.

Conventions:

- Config columns are the results schema's (:data:`forest_seg.results.CONFIG_COLUMNS`: the
  TrainConfig fields, ``epochs`` as ``max_epochs``) present in the frame. A *configuration* is
  the values of the config columns other than ``seed``.
- The *driver* of a trial (the search that ran it: ``grid``, ``optuna``, ``pbt``, or the
  name a Study gave) is results.csv's ``driver`` column (:func:`trial_drivers`). Files written
  before that column existed, and frames rebuilt from Ray Tune's folders, fall back to the
  legacy reading of the experiment's name (:func:`experiment_kind`).
- ``max_epochs`` is the planned number of epochs (the config field ``epochs``); ``epochs`` is the
  number of epochs a trial reached.
- Every loaded frame carries an ``experiment`` column (the directory name, made unique when two
  directories share a name); ``(experiment, trial_id)`` identifies a trial.
- Seeds are seeds: two trials with the same value in every config column, ``seed`` included,
  are the same run (training is deterministic on a CPU), so pooling experiments keeps only the
  first of them (:func:`drop_duplicate_trials`); the number dropped is logged and kept in
  ``trials.attrs["duplicates_dropped"]``. PBT trials are never duplicates: their ``lr`` is the
  final one of a path their config columns do not describe.
- ``baseline_*`` columns (the all-forest and colour-table baselines of a trial) are metrics.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from forest_seg.errors import ForestSegError
from forest_seg.results import (
    CHECKPOINT,
    CONFIG_COLUMNS,
    DRIVER_COLUMN,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    RESULT_TAIL,
    RESULTS_FILE,
    STATUSES,
    last_error_line,
    trial_summary,
    unique_epochs,
)

LOG = logging.getLogger(__name__)
DUPLICATES_DROPPED = "duplicates_dropped"  # key of trials.attrs set by load_experiments
REQUIRED_RESULTS = ("trial_id", "status", "val_miou", "best_val_miou", "epochs")
REQUIRED_HISTORY = ("trial_id", "epoch")
KEY_COLUMNS = ("trial_id", "epoch")  # never empty in a row
RESULTS_NUMERIC = tuple(c for c in RESULT_TAIL if c != "status")
HISTORY_NUMERIC = tuple(c for c in HISTORY_COLUMNS
                        if c not in ("trial_id", "diverged", "pretrained_loaded", CHECKPOINT))
# Keys Ray Tune adds to every result row; they are not metrics of ours.
RAY_KEYS = frozenset({
    "trial_id", "training_iteration", "config", "done", "time_total_s", "time_this_iter_s",
    "time_since_restore", "iterations_since_restore", "timesteps_total", "timesteps_since_restore",
    "episodes_total", "episode_reward_mean", "timestamp", "date", "hostname", "node_ip", "pid",
    "experiment_id", "experiment_tag", "checkpoint_dir_name", "should_checkpoint", "warmup_time",
})
_RAY_TRIAL_ID = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")
_KIND = re.compile(r"^(grid|optuna|pbt)(?![a-z])", re.IGNORECASE)
DEFAULT_KIND = "run"


class ResultsError(ForestSegError):
    """An experiment directory or results file that cannot be analysed."""


# --------------------------------------------------------------------------- column helpers
def is_config_column(name: str) -> bool:
    """True for a config column (see the module docstring), False for bookkeeping/metrics."""
    return name in CONFIG_COLUMNS


def config_columns(trials: pd.DataFrame, include_seed: bool = False) -> list[str]:
    """The config columns of ``trials`` in frame order; ``seed`` only if ``include_seed``."""
    return [c for c in trials.columns if is_config_column(c) and (include_seed or c != "seed")]


def norm_value(value: object) -> object:
    """A hashable, comparable form of a config value: NaN/None/NA -> None, numpy -> Python."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# Config columns that others determine: a fixed-budget study's max_train_tiles follows from the
# trial's points and budget_hours (grid.py --budget-hours), so it does not group trials itself
DERIVED_COLUMNS = {"max_train_tiles": "budget_hours"}


def varying_columns(trials: pd.DataFrame, columns: Iterable[str] | None = None) -> list[str]:
    """The config columns (seed excluded) that take more than one value in ``trials``; without
    ``columns``, not those another column determines (:data:`DERIVED_COLUMNS`, where that
    column is recorded)."""
    if columns is None:
        cols = [c for c in config_columns(trials) if not _derived(trials, c)]
    else:
        cols = list(columns)
    return [c for c in cols if len({norm_value(v) for v in trials[c]}) > 1]


def _derived(trials: pd.DataFrame, column: str) -> bool:
    source = DERIVED_COLUMNS.get(column)
    return source in trials.columns and trials[source].notna().any()


def format_value(value: object) -> str:
    """Short display form of a config value (``None`` for missing, ``1e-04`` style for lr)."""
    value = norm_value(value)
    if value is None:
        return "None"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_label(row: pd.Series | dict, columns: Sequence[str]) -> str:
    """``"points=50, lr=0.0001"``; ``"all trials"`` when ``columns`` is empty."""
    if not columns:
        return "all trials"
    return ", ".join(f"{c}={format_value(row[c])}" for c in columns)


def experiment_kind(name: object) -> str:
    """Legacy: ``grid``, ``optuna`` or ``pbt`` from an experiment name's prefix, else ``run``;
    only for trials without a ``driver`` (see :func:`trial_drivers`)."""
    match = _KIND.match(str(name).strip())
    return match.group(1).lower() if match else DEFAULT_KIND


def trial_drivers(trials: pd.DataFrame) -> pd.Series:
    """The driver of every trial (module docstring), indexed like ``trials``: the ``driver``
    column where set, else the legacy :func:`experiment_kind` of the ``experiment`` name,
    else ``run``."""
    if "experiment" in trials.columns:
        drivers = trials["experiment"].map(experiment_kind)
    else:
        drivers = pd.Series(DEFAULT_KIND, index=trials.index, dtype=object)
    if DRIVER_COLUMN in trials.columns:
        given = trials[DRIVER_COLUMN].map(norm_value)
        drivers = given.where(given.notna(), drivers).map(str)
    return drivers.astype(str)


def trial_keys(frame: pd.DataFrame) -> list[str]:
    """The columns identifying a trial: ``experiment`` (when present) and ``trial_id``."""
    return ["experiment", "trial_id"] if "experiment" in frame.columns else ["trial_id"]


# --------------------------------------------------------------------------- normalisation
def _to_bool(series: pd.Series) -> pd.Series:
    truthy = {"true", "1", "yes", "1.0"}

    def conv(v: object) -> bool:
        v = norm_value(v)
        if v is None:
            return False
        if isinstance(v, str):
            return v.strip().lower() in truthy
        return bool(v)

    return series.map(conv).astype(bool)


def _normalise_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Canonical column order and dtypes of a trials frame."""
    trials = trials.copy()
    trials["trial_id"] = trials["trial_id"].astype(str)
    trials["status"] = trials["status"].astype(str).str.strip().str.upper()
    for col in RESULT_TAIL:
        if col not in trials.columns:
            trials[col] = np.nan
        if col != "status":
            trials[col] = pd.to_numeric(trials[col], errors="coerce").astype(float)
    trials["epochs"] = trials["epochs"].fillna(0).astype(int)  # no recorded epoch: reached 0
    config = config_columns(trials, include_seed=True)
    for col in config:  # a field that is None in every trial (alpha=None): NaN, as read_csv gives
        if trials[col].isna().all():
            trials[col] = trials[col].astype(float)
    head = [c for c in ("experiment", "trial_id") if c in trials.columns]
    tail = list(RESULT_TAIL)
    rest = [c for c in trials.columns if c not in head + config + tail]
    return trials[head + config + tail + rest].reset_index(drop=True)


def _normalise_history(history: pd.DataFrame) -> pd.DataFrame:
    history = history.copy()
    history["trial_id"] = history["trial_id"].astype(str)
    history["epoch"] = pd.to_numeric(history["epoch"], errors="coerce").astype(int)
    for col in history.columns:
        if col in ("trial_id", "experiment", "epoch"):
            continue
        if col == "diverged":
            history[col] = _to_bool(history[col])
        else:
            if pd.api.types.is_bool_dtype(history[col]):
                continue
            converted = pd.to_numeric(history[col], errors="coerce")
            if converted.notna().sum() == history[col].notna().sum():
                history[col] = converted.astype(float)
    if "diverged" not in history.columns:
        history["diverged"] = False
    known = [c for c in HISTORY_COLUMNS if c in history.columns]
    head = [c for c in ("experiment",) if c in history.columns]
    rest = sorted(c for c in history.columns if c not in known + head)
    keys = [c for c in ("experiment", "trial_id", "epoch") if c in history.columns]
    history = history[head + known + rest].sort_values(keys, kind="stable")
    return history.reset_index(drop=True)


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c == "trial_id" else float)
                         for c in HISTORY_COLUMNS})


# --------------------------------------------------------------------------- CSV files
def _record_lines(path: Path, text: str) -> list[int]:
    """The first line number of every non-blank data record of CSV ``text``.

    Raises :class:`ResultsError` naming ``path`` and the line of a record whose number of
    fields differs from the header's (a truncated or malformed row), or when the file ends
    mid-line (the writers end every row with a newline: a cut file).
    """
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, [])
        lines, start = [], reader.line_num + 1
        for row in reader:
            if row and len(row) != len(header):
                raise ResultsError(
                    f"{path} line {start}: {len(row)} fields, the header has {len(header)}; "
                    "expected one complete row per line (a truncated or hand-edited file?)"
                )
            if row:
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ResultsError(
            f"{path} line {reader.line_num}: not a readable CSV row ({exc})"
        ) from exc
    if text and not text.endswith(("\n", "\r")):
        raise ResultsError(
            f"{path} line {reader.line_num}: the file ends mid-line; expected every row to end "
            "with a newline (truncated while being written?)"
        )
    return lines


def _check_values(path: Path, frame: pd.DataFrame, lines: Sequence[int],
                  numeric: Iterable[str], required: Sequence[str]) -> None:
    """Raise :class:`ResultsError` naming the file, line and column of the first value that
    is empty in a ``required`` column, not a number in a ``numeric`` column, or (``status``)
    not one of :data:`~forest_seg.results.STATUSES`."""
    problems: list[tuple[int, str]] = []
    for col in required:
        for i in np.flatnonzero(frame[col].isna().to_numpy())[:1]:
            problems.append((int(i), f"{col} is empty"))
    for col in (c for c in numeric if c in frame.columns):
        converted = pd.to_numeric(frame[col], errors="coerce")
        for i in np.flatnonzero((converted.isna() & frame[col].notna()).to_numpy())[:1]:
            problems.append((int(i), f"{col}={frame[col].iloc[i]!r} is not a number"))
    if "status" in frame.columns:
        status = frame["status"].astype(str).str.strip().str.upper()
        for i in np.flatnonzero(~status.isin(STATUSES).to_numpy())[:1]:
            problems.append((int(i), f"status={frame['status'].iloc[i]!r} is not one of "
                                     f"{', '.join(STATUSES)}"))
    if problems:
        i, what = min(problems)
        raise ResultsError(f"{path} line {lines[i]}: {what}")


def _read_csv(path: Path, required: Sequence[str],
              numeric: Iterable[str] = ()) -> pd.DataFrame:
    """``path`` as a frame (``trial_id`` as text), refusing a truncated or malformed file:
    :class:`ResultsError` names the file, and the line where there is one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not a readable CSV file ({exc})") from exc
    lines = _record_lines(path, text)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype={"trial_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ResultsError(f"{path}: not a readable CSV file ({exc})") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ResultsError(
            f"{path}: missing column(s) {', '.join(missing)}; expected at least "
            f"{', '.join(required)}"
        )
    if len(frame) != len(lines):  # pandas and csv disagree on the records: trust neither
        raise ResultsError(f"{path}: {len(frame)} rows parsed but {len(lines)} records found")
    _check_values(path, frame, lines, numeric, [c for c in required if c in KEY_COLUMNS])
    return frame


def _csv_or_ray(path: Path, required: Sequence[str], numeric: Iterable[str],
                ray: Callable[[], tuple[pd.DataFrame, pd.DataFrame] | None],
                which: int) -> pd.DataFrame | None:
    """The frame of the CSV file ``path``, else (file missing, or broken while Ray Tune's
    trial folders exist: said in one warning) frame ``which`` of ``ray()``, else None."""
    if not path.is_file():
        frames = ray()
        return None if frames is None else frames[which]
    try:
        return _read_csv(path, required, numeric)
    except ResultsError as exc:
        frames = ray()
        if frames is None:
            raise
        LOG.warning("%s; rebuilt %s from Ray Tune's trial folders in %s instead", exc,
                    path.name, path.parent)
        return frames[which]


# --------------------------------------------------------------------------- Ray Tune files
def _ray_trial_dirs(exp_dir: Path) -> list[Path]:
    return sorted(
        p for p in exp_dir.iterdir()
        if p.is_dir() and ((p / "params.json").is_file() or (p / "result.json").is_file())
    )


def _read_json_lines(path: Path) -> list[dict]:
    """The parsable rows of a JSON-lines file; a truncated line (crash mid-write) is skipped."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _ray_trial(trial_dir: Path) -> tuple[dict, list[dict]]:
    """One Ray trial folder -> (results row, history rows)."""
    params: dict = {}
    params_path = trial_dir / "params.json"
    if params_path.is_file():
        try:
            params = json.loads(params_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{params_path}: not valid JSON ({exc})") from exc
    rows = _read_json_lines(trial_dir / "result.json")
    if not params and rows and isinstance(rows[0].get("config"), dict):
        params = rows[0]["config"]

    trial_id = next((str(r["trial_id"]) for r in rows if r.get("trial_id") is not None), None)
    if trial_id is None:
        match = _RAY_TRIAL_ID.search(trial_dir.name)
        trial_id = match.group(1) if match else trial_dir.name

    history = []
    for i, row in enumerate(rows, start=1):
        epoch = row.get("epoch", row.get("training_iteration", i))
        entry = {"trial_id": trial_id, "epoch": epoch}
        for key, value in row.items():
            if key not in RAY_KEYS and key != "epoch" and not isinstance(value, (dict, list)):
                entry[key] = value
        history.append(entry)
    history = list(unique_epochs(history))  # a retry re-reports epochs: keep the last report

    error_file = trial_dir / "error.txt"
    errored = error_file.is_file() or (trial_dir / "error.pkl").is_file()
    error = (last_error_line(error_file.read_text(encoding="utf-8", errors="replace"))
             if error_file.is_file() else None)
    last_time = rows[-1].get("time_total_s") if rows else None
    # the drivers' own rule set (forest_seg.results): status, best_*, epochs reached;
    # train_time_s = Ray's last time_total_s, else the sum of epoch_time_s; error = the
    # traceback's last line
    result = trial_summary(trial_id, params, history, errored=errored, train_time_s=last_time,
                           error=error)
    return result, history


def _load_ray(exp_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    trial_dirs = _ray_trial_dirs(exp_dir)
    if not trial_dirs:
        return None
    results, history = [], []
    for trial_dir in trial_dirs:
        result, rows = _ray_trial(trial_dir)
        results.append(result)
        history.extend(rows)
    trials = pd.DataFrame(results)
    epochs = pd.DataFrame(history) if history else _empty_history()
    return trials, epochs


# --------------------------------------------------------------------------- public loaders
def load_experiment(exp_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load one experiment directory into ``(trials, epochs)`` (no ``experiment`` column).

    ``trials`` has a row per trial: ``trial_id``, the config columns, then ``status``,
    ``val_iou``, ``val_miou``, ``val_loss`` (final epoch), ``best_epoch``, ``best_val_iou``,
    ``best_val_miou``, ``best_val_loss`` (all at the best epoch; NaN in files written before
    ``best_epoch`` existed), ``epochs`` (reached, int; 0 when none was recorded),
    ``train_time_s``, then any other columns (``baseline_*``, ``best_<metric>``); sorted by
    ``trial_id``.
    ``epochs`` has a row per trial per epoch (``trial_id``, ``epoch`` 1-based, the per-epoch
    metrics, ``diverged`` as bool), sorted by trial and epoch.

    ``results.csv`` / ``history.csv`` are used when present; whichever is missing is rebuilt
    from Ray Tune's trial folders. A file that is truncated or malformed (a row with more or
    fewer fields than the header, no final newline, an empty ``trial_id``/``epoch``, a value
    that is not a number in a numeric column, a ``status`` not in
    :data:`~forest_seg.results.STATUSES`) is never read as valid: it is rebuilt from Ray Tune's
    trial folders when they exist (said in one warning), else :class:`ResultsError` names the
    file and line. Raises :class:`ResultsError` naming the directory when neither source
    exists.
    """
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise ResultsError(f"{exp_dir}: experiment directory not found")
    loaded: list[tuple[pd.DataFrame, pd.DataFrame] | None] = []

    def ray() -> tuple[pd.DataFrame, pd.DataFrame] | None:
        if not loaded:
            loaded.append(_load_ray(exp_dir))
        return loaded[0]

    trials = _csv_or_ray(exp_dir / RESULTS_FILE, REQUIRED_RESULTS, RESULTS_NUMERIC, ray, 0)
    if trials is None:
        raise ResultsError(
            f"{exp_dir}: no {RESULTS_FILE} and no Ray Tune trial folders (subfolders with "
            f"params.json/result.json); expected an experiment directory written by sweeps/*.py"
        )
    if trials.empty:
        raise ResultsError(f"{exp_dir}: {RESULTS_FILE} has no trial rows")

    epochs = _csv_or_ray(exp_dir / HISTORY_FILE, REQUIRED_HISTORY, HISTORY_NUMERIC, ray, 1)
    if epochs is None:
        epochs = _empty_history()

    trials = _normalise_trials(trials).sort_values("trial_id", kind="stable", ignore_index=True)
    duplicated = trials["trial_id"][trials["trial_id"].duplicated()].unique()
    if len(duplicated):
        raise ResultsError(
            f"{exp_dir}: trial_id {duplicated[0]!r} appears in more than one row; expected one "
            f"row per trial"
        )
    return trials, _normalise_history(epochs)


def load_experiments(exp_dirs: str | Path | Sequence[str | Path]) -> tuple[pd.DataFrame,
                                                                          pd.DataFrame]:
    """Load one or more experiment directories into ``(trials, epochs)``.

    Both frames gain a leading ``experiment`` column: the directory name, suffixed ``#2``,
    ``#3``... when two directories share a name. Passing the same directory twice is an error
    (its trials would be counted twice); a trial repeated in another directory (same config
    columns and seed: the same run) is kept once, the first, and its history with it; the
    number dropped is logged and set in ``trials.attrs["duplicates_dropped"]``.
    """
    if isinstance(exp_dirs, (str, Path)):
        exp_dirs = [exp_dirs]
    if not exp_dirs:
        raise ResultsError("no experiment directory given; expected at least one")
    seen: dict[Path, Path] = {}
    names: list[str] = []
    all_trials, all_epochs = [], []
    for exp_dir in map(Path, exp_dirs):
        resolved = exp_dir.resolve()
        if resolved in seen:
            raise ResultsError(f"{exp_dir}: experiment directory given twice")
        seen[resolved] = exp_dir
        trials, epochs = load_experiment(exp_dir)
        name, k = resolved.name or str(exp_dir), 2
        while name in names:
            name, k = f"{resolved.name}#{k}", k + 1
        names.append(name)
        all_trials.append(trials.assign(experiment=name))
        all_epochs.append(epochs.assign(experiment=name))
    trials = _normalise_trials(pd.concat(all_trials, ignore_index=True, sort=False))
    non_empty = [e for e in all_epochs if not e.empty]
    epochs = pd.concat(non_empty, ignore_index=True, sort=False) if non_empty else (
        _empty_history().assign(experiment=pd.Series(dtype=object)))
    repeated = duplicate_mask(trials)
    if repeated.any():
        LOG.warning("dropped %d duplicate trial(s): same config columns and seed as an earlier "
                    "trial (the same run), counted once", int(repeated.sum()))
        keys = trial_keys(trials)
        gone = epochs[keys].merge(trials.loc[repeated, keys], on=keys, how="left",
                                  indicator=True)["_merge"].eq("both").to_numpy()
        epochs = epochs[~gone]
        trials = trials[~repeated].reset_index(drop=True)
    trials.attrs[DUPLICATES_DROPPED] = int(repeated.sum())
    return trials, _normalise_history(epochs)


def duplicate_mask(trials: pd.DataFrame) -> pd.Series:
    """True for each trial that repeats an earlier row's config columns and ``seed`` (see the
    module docstring); all False without a ``seed`` column. PBT trials are never repeats."""
    if "seed" not in trials.columns or trials.empty:
        return pd.Series(False, index=trials.index)
    cols = config_columns(trials, include_seed=True)
    keys = pd.Series([tuple(norm_value(v) for v in values)
                      for values in trials[cols].itertuples(index=False, name=None)],
                     index=trials.index)
    pbt = trial_drivers(trials) == "pbt"
    keys[pbt] = [("pbt", i) for i in trials.index[pbt]]  # unique: never repeats
    return keys.duplicated(keep="first")


def drop_duplicate_trials(trials: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``trials`` without repeated (config, seed) trials, the first kept; and how many went."""
    repeated = duplicate_mask(trials)
    kept = trials[~repeated].reset_index(drop=True)
    kept.attrs = dict(trials.attrs)
    return kept, int(repeated.sum())
