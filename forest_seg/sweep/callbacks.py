"""The Ray Tune callback that keeps an experiment's results.csv and history.csv current.

It lives in the installed package because Ray pickles it into the experiment: restoring it
(``tune.Tuner.restore``, ``tune.ExperimentAnalysis``) then works from any folder.

history.csv is rewritten after every reported epoch (so it is current when a trial ends) and
results.csv after every finished trial, so a killed driver loses nothing that was reported; a
resumed driver reads both files back first, records any trial Ray had finished that
results.csv lacks, and a trial retried from a checkpoint overwrites its re-reported epochs.
The columns are :mod:`forest_seg.results`'s schema.

A write that fails (a full disk: ``OSError``) is reported in one line and stops the sweep
gracefully (:func:`~forest_seg.sweep.stopping.request_stop`): Ray keeps the unfinished trials
for ``--resume``, and the resumed writer rebuilds what this one could not write.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from ray import tune

from ..results import (
    HISTORY_FILE,
    RESTORED_EPOCHS,
    RESULTS_FILE,
    history_columns,
    history_row,
    trial_summary,
)
from .files import read_csv, write_csv
from .stopping import StopRequest, request_stop

EXIT_WRITE_FAILED = 1
_FINISHED = ("TERMINATED", "ERROR")  # Ray's statuses of a trial that will not run again


class ResultsFiles(tune.Callback):
    """Writes ``<experiment>/results.csv`` and ``history.csv`` (local path or URI); every
    results row carries ``driver``."""

    def __init__(self, experiment_path: str, driver: str | None = None):
        self.experiment_path = experiment_path
        self.driver = driver
        self._summaries: dict[str, dict[str, Any]] | None = None
        self._epochs: dict[tuple[str, int], dict[str, Any]] = {}
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
        self._epochs[(trial.trial_id, int(result["epoch"]))] = history_row(trial.trial_id, result)
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
        self._summaries[trial.trial_id] = trial_summary(
            trial.trial_id, trial.config, rows, errored=errored, train_time_s=total,
            driver=self.driver,
        )
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
