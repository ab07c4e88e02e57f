"""Seeds until resolved: a Ray Tune searcher that adds seeds to a labelling study while it
runs, until the comparisons its answer rests on are resolved.

The study is a list of configurations (point counts and dense, at one lr). The searcher hands
out ``seeds`` seeds of each; when every handed-out trial has finished it asks
:func:`~forest_seg.analysis.cost.key_comparisons` which comparisons the finished trials do not
resolve yet, and adds ``round_seeds`` more seeds to both labellings of each open one (up to
``max_seeds`` per configuration). It finishes when every comparison is resolved or no open
comparison can get another seed. Only trials that ran all their epochs count (a FIFO study:
an early-stopped trial has no final-epoch score). Its state is saved with the experiment, so a
resumed sweep continues the rounds.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from ray.tune.search import Searcher

from ..analysis.cost import DEFAULT_DELTA, CostModel, key_comparisons
from ..analysis.load import norm_value
from ..errors import ConfigError
from .study import METRIC, MODE

ROUND_SEEDS = 2  # seeds a round adds: a paired comparison needs at least two


class SeedsUntilResolved(Searcher):
    """Hands out ``configs`` (dicts of swept TrainConfig fields with ``points``, no ``seed``)
    for seeds ``0 .. seeds-1``, then in rounds more seeds for the labellings of open key
    comparisons, up to ``max_seeds`` (module docstring)."""

    def __init__(self, configs: Sequence[Mapping[str, Any]], seeds: int, max_seeds: int = 10,
                 round_seeds: int = ROUND_SEEDS, delta: float = DEFAULT_DELTA,
                 cost: CostModel | None = None):
        super().__init__(metric=METRIC, mode=MODE)
        if not configs or any("points" not in c or "seed" in c for c in configs):
            raise ConfigError("until-resolved: expected configurations with `points` and no "
                              "`seed`")
        if not 1 <= seeds <= max_seeds or round_seeds < 1:
            raise ConfigError(f"invalid --seeds {seeds} / --max-seeds {max_seeds}: expected "
                              "1 <= seeds <= max-seeds")
        self.configs = [dict(c) for c in configs]
        self.max_seeds, self.round_seeds = max_seeds, round_seeds
        self.delta, self.cost = delta, cost or CostModel()
        self._queue = [(i, s) for s in range(seeds) for i in range(len(self.configs))]
        self._seeds = [seeds] * len(self.configs)
        self._running: dict[str, tuple[int, int]] = {}
        self._finished: list[dict[str, Any]] = []
        self.rounds = 1

    def suggest(self, trial_id: str) -> dict | str | None:
        if not self._queue:
            if self._running:
                return None  # wait for the round to finish before deciding
            if not self._plan_round():
                return Searcher.FINISHED
        index, seed = self._queue.pop(0)
        self._running[trial_id] = (index, seed)
        return {**self.configs[index], "seed": seed}

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        index, seed = self._running.pop(trial_id, (None, None))
        if index is None:
            return
        self._finished.append(trial_row(self.configs[index], seed, result, error))

    def finished_trials(self) -> pd.DataFrame:
        """The finished trials so far, in the results schema's terms (status, val_miou...)."""
        return pd.DataFrame(self._finished)

    def _plan_round(self) -> bool:
        """Queue the next round's seeds; False when there is nothing (left) to add."""
        wanted: set = set()
        for comparison in key_comparisons(self.finished_trials(), self.cost, delta=self.delta):
            if not comparison.resolved:
                wanted |= {comparison.a, comparison.b}
        for i, config in enumerate(self.configs):
            have = self._seeds[i]
            if norm_value(config["points"]) in wanted and have < self.max_seeds:
                more = min(self.round_seeds, self.max_seeds - have)
                self._queue += [(i, s) for s in range(have, have + more)]
                self._seeds[i] = have + more
        if self._queue:
            self.rounds += 1
        return bool(self._queue)

    def get_state(self) -> dict:
        return dict(self.__dict__)

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


def trial_row(config: Mapping[str, Any], seed: int, result: dict | None,
              error: bool) -> dict[str, Any]:
    """A finished trial as a results-like row: COMPLETED only when it reported its last
    planned epoch without diverging (its ``val_miou`` is the headline value)."""
    result = result or {}
    planned = (result.get("config") or {}).get("epochs")
    epoch = result.get("epoch")
    if error:
        status = "ERROR"
    elif result.get("diverged"):
        status = "DIVERGED"
    elif planned is not None and epoch == planned:
        status = "COMPLETED"
    else:
        status = "EARLY_STOPPED"
    return {**config, "seed": seed, "status": status, "epochs": epoch or 0,
            "val_miou": result.get(METRIC, math.nan),
            "train_tiles": result.get("train_tiles", math.nan)}
