"""A Ray Tune callback that keeps an experiment's results.csv and history.csv current.

history.csv is rewritten after every reported epoch (so it is current when a trial ends) and
results.csv after every finished trial, so a killed driver loses nothing that was reported; a
resumed driver reads both files back first, and a trial retried from a checkpoint overwrites
its re-reported epochs.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
from ray import tune

from forest_seg.results import HISTORY_COLUMNS, HISTORY_FILE, RESULTS_FILE, trial_summary

EXTRA_HISTORY_KEYS = ("val_iou_nonforest", "pretrained_loaded")
BASELINE_PREFIX = "baseline_"  # the trial's no-training reference scores (forest_seg.baselines)


class ResultsFiles(tune.Callback):
    """Writes ``<experiment>/results.csv`` and ``history.csv`` (local path or URI)."""

    def __init__(self, experiment_path: str):
        self.experiment_path = experiment_path
        self._summaries: dict[str, dict[str, Any]] | None = None
        self._epochs: dict[tuple[str, int], dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment
        return {"experiment_path": self.experiment_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["experiment_path"])

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._load()
        row = {"trial_id": trial.trial_id}
        row.update({k: v for k, v in result.items()
                    if k in HISTORY_COLUMNS or k in EXTRA_HISTORY_KEYS
                    or k.startswith(BASELINE_PREFIX)})
        self._epochs[(trial.trial_id, int(result["epoch"]))] = row
        self._write(HISTORY_FILE, self._history_frame())

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, errored=True)

    def _finish(self, trial, errored: bool) -> None:
        self._load()
        rows = [row for (tid, _), row in sorted(self._epochs.items()) if tid == trial.trial_id]
        total = (trial.last_result or {}).get("time_total_s")
        self._summaries[trial.trial_id] = trial_summary(
            trial.trial_id, trial.config, rows, errored=errored, train_time_s=total
        )
        self._write(RESULTS_FILE, pd.DataFrame(list(self._summaries.values())))

    def _history_frame(self) -> pd.DataFrame:
        ordered = [row for _, row in sorted(self._epochs.items())]
        return pd.DataFrame(ordered, columns=_columns(ordered))

    def _load(self) -> None:
        """Read back the files of an earlier run of this experiment (a resumed sweep)."""
        if self._summaries is not None:
            return
        self._summaries = {}
        results = self._read(RESULTS_FILE)
        if results is not None:
            for row in results.to_dict("records"):
                self._summaries[str(row["trial_id"])] = row
        history = self._read(HISTORY_FILE)
        if history is not None:
            for row in history.to_dict("records"):
                self._epochs[(str(row["trial_id"]), int(row["epoch"]))] = row

    def _filesystem(self):
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(self.experiment_path)

    def _read(self, name: str) -> pd.DataFrame | None:
        fs, root = self._filesystem()
        path = f"{root}/{name}"
        if fs.get_file_info(path).type.name != "File":
            return None
        with fs.open_input_stream(path) as stream:
            return pd.read_csv(io.BytesIO(stream.read()), dtype={"trial_id": str})

    def _write(self, name: str, frame: pd.DataFrame) -> None:
        fs, root = self._filesystem()
        fs.create_dir(root, recursive=True)
        tmp = f"{root}/.{name}.tmp"
        with fs.open_output_stream(tmp) as stream:
            stream.write(frame.to_csv(index=False).encode())
        fs.move(tmp, f"{root}/{name}")


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    present = {key for row in rows for key in row}
    known = [c for c in HISTORY_COLUMNS if c in present]
    return known + sorted(present - set(known))
