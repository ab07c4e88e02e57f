"""Ray Tune's OptunaSearch that records each finished trial as Optuna users expect.

Ray's OptunaSearch tells Optuna COMPLETE for every trial that ends with a result, also one ASHA
stopped after a few epochs, and leaves out of its intermediate values the result on which a
scheduler stopped it. :class:`OptunaTrials` tells a trial stopped before its planned
epochs PRUNED (Optuna then takes its last intermediate value, the val mIoU of its last epoch,
as its value), a diverged or failed one FAIL, and gives every trial the user attributes
``ray_trial_id``, ``status`` (as in results.csv), ``epochs`` (reached) and, when its folder
is found in a local experiment, ``checkpoint`` (the path of its last checkpoint). It lives in
the package so that a resumed experiment can unpickle it from any folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optuna.trial import TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from ..results import final_status

OPTUNA_STATES = {"COMPLETED": TrialState.COMPLETE, "EARLY_STOPPED": TrialState.PRUNED,
                 "DIVERGED": TrialState.FAIL, "ERROR": TrialState.FAIL}


class OptunaTrials(OptunaSearch):
    """OptunaSearch (same arguments) telling Optuna PRUNED / COMPLETE / FAIL by the trial's
    status, with user attributes. ``experiment_path``: the experiment's local folder, where
    trials' checkpoints are looked up (None or a URI: no ``checkpoint`` attribute)."""

    def __init__(self, *args: Any, experiment_path: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.experiment_path = experiment_path
        self._reported_steps: dict[str, int] = {}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        super().on_trial_result(trial_id, result)
        self._reported_steps[trial_id] = result[TRAINING_ITERATION]

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            super().on_trial_complete(trial_id, result, error)  # Ray warns and ignores
            return
        result = result or {}
        # A scheduler's STOP hands the trial's last result to on_trial_complete only: it
        # becomes the last intermediate value here (the value of a PRUNED trial).
        step = result.get(TRAINING_ITERATION)
        if (self.metric in result and step is not None
                and step != self._reported_steps.get(trial_id)):
            self.on_trial_result(trial_id, result)
        epochs = int(result.get("epoch", 0))
        status = final_status(result, epochs, result.get("config/epochs"), error)
        ot_trial = self._ot_trials[trial_id]
        for key, value in self.user_attrs(trial_id, status, epochs, result).items():
            ot_trial.set_user_attr(key, value)
        state = OPTUNA_STATES[status]
        value = result.get(self.metric) if state == TrialState.COMPLETE else None
        self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(trial_id)

    def user_attrs(self, trial_id: str, status: str, epochs: int,
                   result: dict) -> dict[str, Any]:
        """The user attributes of a finished trial (see the module docstring)."""
        attrs: dict[str, Any] = {"ray_trial_id": trial_id, "status": status, "epochs": epochs}
        checkpoint = self.checkpoint_path(trial_id, result.get("checkpoint_dir_name"))
        if checkpoint is not None:
            attrs["checkpoint"] = checkpoint
        return attrs

    def checkpoint_path(self, trial_id: str, checkpoint_dir_name: str | None) -> str | None:
        """``<experiment>/<trial folder>/<checkpoint_dir_name>`` (Ray names a trial's folder
        with its id), or None when not found or not local."""
        if not checkpoint_dir_name or not self.experiment_path or "://" in self.experiment_path:
            return None
        found = sorted(Path(self.experiment_path).glob(f"*{trial_id}*/{checkpoint_dir_name}"))
        return str(found[0]) if len(found) == 1 else None
