"""Seeds until resolved: the searcher's rounds, driven by hand, and a smoke sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from ray.tune.search import Searcher

from forest_seg.analysis.cost import key_comparisons
from forest_seg.errors import ConfigError
from forest_seg.sweep.until_resolved import SeedsUntilResolved

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [{"points": 10, "lr": 1e-3}, {"points": 0, "lr": 1e-3}]


def finish(searcher: SeedsUntilResolved, scores: dict[int, list[float]]) -> list[dict]:
    """Suggest until the searcher waits or finishes; complete every suggestion with
    ``scores[points][seed]`` as a final-epoch val mIoU; the suggestions."""
    handed = []
    while (config := searcher.suggest(f"t{len(handed)}_{id(handed)}")) not in (
            None, Searcher.FINISHED):
        handed.append(config)
    for i, config in enumerate(handed):
        result = {"epoch": 2, "val_miou": scores[config["points"]][config["seed"]],
                  "diverged": False, "train_tiles": 12, "config": {"epochs": 2}}
        searcher.on_trial_complete(f"t{i}_{id(handed)}", result)
    return handed


def test_rounds_add_seeds_until_the_comparisons_are_resolved():
    searcher = SeedsUntilResolved(CONFIGS, seeds=1, max_seeds=6, round_seeds=2)
    clear = {10: [0.50, 0.52, 0.49, 0.51, 0.50, 0.50], 0: [0.70, 0.71, 0.70, 0.72, 0.7, 0.7]}
    first = finish(searcher, clear)
    assert [(c["points"], c["seed"]) for c in first] == [(10, 0), (0, 0)]
    # one seed resolves nothing: the next round adds seeds 1 and 2 to both labellings
    second = finish(searcher, clear)
    assert sorted((c["points"], c["seed"]) for c in second) == [(0, 1), (0, 2), (10, 1),
                                                                  (10, 2)]
    # three paired seeds, dense ahead by 0.20, 0.19, 0.21: resolved, so the search ends
    assert searcher.suggest("last") == Searcher.FINISHED
    assert searcher.rounds == 2
    comparisons = key_comparisons(searcher.finished_trials())
    assert [c.describe() for c in comparisons][0] == (
        "10 points differs from dense: resolved at 3 paired seeds")


def test_an_unresolvable_study_stops_at_max_seeds():
    searcher = SeedsUntilResolved(CONFIGS, seeds=1, max_seeds=4, round_seeds=2)
    noisy = {10: [0.5, 0.7, 0.5, 0.7], 0: [0.6, 0.6, 0.6, 0.6]}  # differences +-0.1
    handed = finish(searcher, noisy) + finish(searcher, noisy) + finish(searcher, noisy)
    assert sorted(c["seed"] for c in handed if c["points"] == 10) == [0, 1, 2, 3]
    assert searcher.suggest("more") == Searcher.FINISHED


def test_state_survives_save_and_restore(tmp_path):
    searcher = SeedsUntilResolved(CONFIGS, seeds=1, max_seeds=4)
    finish(searcher, {10: [0.5], 0: [0.7]})
    searcher.save(tmp_path / "searcher.pkl")
    restored = SeedsUntilResolved(CONFIGS, seeds=1, max_seeds=4)
    restored.restore(tmp_path / "searcher.pkl")
    assert restored.finished_trials().equals(searcher.finished_trials())
    assert restored.suggest("next") == {"points": 10, "lr": 1e-3, "seed": 1}


@pytest.mark.parametrize("kwargs", [{"seeds": 0}, {"seeds": 5, "max_seeds": 4}])
def test_bad_seed_counts_are_refused(kwargs):
    with pytest.raises(ConfigError, match="--seeds"):
        SeedsUntilResolved(CONFIGS, **kwargs)


@pytest.mark.slow
def test_grid_until_resolved_adds_a_round_of_seeds(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    done = subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "grid.py"), "--smoke-test", "--until-resolved",
         "--points", "10", "--seeds", "1", "--max-seeds", "3", "--storage-path", str(tmp_path),
         "--name", "ur"], capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = pd.read_csv(tmp_path / "ur" / "results.csv")
    # one seed cannot resolve "10 points vs dense": a second round (seeds 1, 2) was added
    assert sorted(results.groupby("points")["seed"].apply(sorted).tolist()) == [[0, 1, 2]] * 2
    assert "until-resolved: 10 points differs from dense" in done.stdout
