"""Population Based Training that leaves a trial's last epoch alone.

Ray Tune's PopulationBasedTraining perturbs at any result past the perturbation interval,
the last epoch included. There nothing is left to train: a bottom member that copied a top
member's checkpoint would only take over that member's finished result, and, restored from a
finished checkpoint, it re-reports the last epoch (:func:`forest_seg.train.fit`), which
synchronous PBT then holds, PAUSED, for members that have already finished: the sweep never
ended. It lives in the package so that a resumed experiment can unpickle it from any folder.
"""

from __future__ import annotations

import math

from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler


class PopulationBasedTrainingBeforeLastEpoch(PopulationBasedTraining):
    """PopulationBasedTraining (same arguments) that lets every result of a trial's last
    epoch (``epoch`` >= its config's ``epochs``) pass: no exploit, no explore, no pause."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("epoch", 0) >= trial.config.get("epochs", math.inf):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)
