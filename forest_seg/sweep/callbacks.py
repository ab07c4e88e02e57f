"""The Ray Tune callback that keeps an experiment's results.csv and history.csv current.

It lives in the installed package because Ray pickles it into the experiment: restoring it
(``tune.Tuner.restore``, ``tune.ExperimentAnalysis``) then works from any folder.

history.csv is rewritten after every reported epoch (so it is current when a trial ends) and
results.csv after every finished trial, so a killed driver loses nothing that was reported; a
resumed driver reads both files back first, records any trial Ray had finished that
results.csv lacks, and a trial retried from a checkpoint overwrites its re-reported epochs.
The columns are :mod:`forest_seg.results`'s schema; a failed trial's ``error`` is its
one-line reason (:func:`~forest_seg.sweep.trial_errors.trial_error_line`); an epoch that saved
a checkpoint names its folder in history.csv's ``checkpoint``, and results.csv's
``best_checkpoint`` is that of the trial's best epoch still kept.

A write that fails (a full disk: ``OSError``) is reported in one line and stops the sweep
gracefully (:func:`~forest_seg.sweep.stopping.request_stop`): Ray keeps the unfinished trials
for ``--resume``, and the resumed writer rebuilds what this one could not write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from ..results import (
    BEST_CHECKPOINT,
    CHECKPOINT,
    HISTORY_FILE,
    RESTORED_EPOCHS,
    RESULTS_FILE,
    best_checkpoint,
    history_columns,
    history_row,
    trial_summary,
)
from .files import read_csv, write_csv
from .stopping import StopRequest, request_stop
from .trial_errors import TrialFailures, trial_error_line

EXIT_WRITE_FAILED = 1
_FINISHED = ("TERMINATED", "ERROR")  # Ray's statuses of a trial that will not run again


def retrained(result: dict[str, Any]) -> bool:
    """Whether a reported result trained its epoch; a trial resumed from a checkpoint that
    had already finished that epoch (its own after a kill, or another member's after a PBT
    exploit) only re-reports it, with the restored epochs."""
    restored = result.get(RESTORED_EPOCHS) or []
    return not restored or int(restored[-1]["epoch"]) != int(result["epoch"])


def relative_to(path: str, experiment_path: str) -> str:
    """``path`` relative to the experiment folder (a local path or a URI, whose scheme the
    checkpoint's filesystem path lacks); unchanged when it lies elsewhere."""
    root = experiment_path.split("://", 1)[-1].rstrip("/") + "/"
    plain = str(path)
    return plain[len(root):] if plain.startswith(root) else plain


def sweep_callbacks(experiment_path: str, driver: str | None) -> list[tune.Callback]:
    """The Ray Tune callbacks of every sweep: its failures' reasons and no retry of a bad
    input (first: they see each trial before the results files do), and its results files."""
    return [TrialFailures(), ResultsFiles(experiment_path, driver)]


class ResultsFiles(tune.Callback):
    """Writes ``<experiment>/results.csv`` and ``history.csv`` (local path or URI); every
    results row carries ``driver``."""

    def __init__(self, experiment_path: str, driver: str | None = None):
        self.experiment_path = experiment_path
        self.driver = driver
        self._summaries: dict[str, dict[str, Any]] | None = None
        self._epochs: dict[tuple[str, int], dict[str, Any]] = {}
        self._trained_configs: dict[str, dict[str, Any]] = {}
        self._write_failed = False

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment
        return {"experiment_path": self.experiment_path, "driver": self.driver}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["experiment_path"], state.get("driver"))

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self._summaries is None:  # the first step: complete the files of a resumed run
            self._load()
            for trial in trials:
                if trial.status in _FINISHED and trial.trial_id not in self._summaries:
                    self._finish(trial, errored=trial.status == "ERROR")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._load()
        for row in result.get(RESTORED_EPOCHS) or []:  # epochs finished before a resume
            self._epochs.setdefault((trial.trial_id, int(row["epoch"])),
                                    history_row(trial.trial_id, row))
        key = (trial.trial_id, int(result["epoch"]))
        if retrained(result):
            self._epochs[key] = history_row(trial.trial_id, result)
            if "config" in result:  # the config this epoch trained with
                self._trained_configs[trial.trial_id] = result["config"]
        else:  # only re-reported from a checkpoint: an epoch already recorded stays as it was
            self._epochs.setdefault(key, history_row(trial.trial_id, result))
        self._write_history()

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        """Note on its epoch's row the folder (relative to the experiment) of the checkpoint
        saved with it (Ray processes a result, then the checkpoint reported with it)."""
        self._load()
        row = self._epochs.get((trial.trial_id, int((trial.last_result or {}).get("epoch", 0))))
        if row is not None:
            row[CHECKPOINT] = relative_to(checkpoint.path, self.experiment_path)
            self._write_history()

    def _write_history(self) -> None:
        ordered = [row for _, row in sorted(self._epochs.items())]
        self._write(HISTORY_FILE, pd.DataFrame(ordered, columns=history_columns(ordered)))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, errored=True)

    def _finish(self, trial, errored: bool) -> None:
        self._load()
        rows = [row for (tid, _), row in sorted(self._epochs.items()) if tid == trial.trial_id]
        total = (trial.last_result or {}).get("time_total_s")
        # PBT may perturb a trial's config after its last epoch (which it then never trains
        # with): the row holds the config of the last epoch reported
        config = self._trained_configs.get(trial.trial_id, trial.config)
        self._summaries[trial.trial_id] = trial_summary(
            trial.trial_id, config, rows, errored=errored, train_time_s=total,
            driver=self.driver, error=trial_error_line(trial) if errored else None,
        )
        self._summaries[trial.trial_id][BEST_CHECKPOINT] = best_checkpoint(rows, self._kept)
        self._write(RESULTS_FILE, pd.DataFrame(list(self._summaries.values())))

    def _write(self, name: str, frame: pd.DataFrame) -> None:
        """Replace the file ``name``; after a failed write, report it once, stop the sweep and
        write nothing more (the resumed run rewrites both files)."""
        if self._write_failed:
            return
        try:
            write_csv(self.experiment_path, name, frame)
        except OSError as exc:
            self._write_failed = True
            request_stop(StopRequest(f"could not write {self.experiment_path}/{name} ({exc}); "
                                     "the sweep stopped; once it can be written",
                                     EXIT_WRITE_FAILED))

    def _kept(self, folder: str) -> bool:
        """Whether a checkpoint folder (relative to the experiment) is still there; Ray deletes
        all but the best ``num_to_keep`` (and the latest). Remote storage: assumed kept."""
        if "://" in self.experiment_path:
            return True
        return (Path(self.experiment_path) / folder).is_dir()

    def _load(self) -> None:
        """Read back the files of an earlier run of this experiment (a resumed sweep)."""
        if self._summaries is not None:
            return
        self._summaries = {}
        results = read_csv(self.experiment_path, RESULTS_FILE)
        if results is not None:
            for row in results.to_dict("records"):
                self._summaries[str(row["trial_id"])] = row
        history = read_csv(self.experiment_path, HISTORY_FILE)
        if history is not None:
            for row in history.to_dict("records"):
                self._epochs[(str(row["trial_id"]), int(row["epoch"]))] = row
