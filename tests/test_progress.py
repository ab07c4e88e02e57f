"""The sweep's console: trial names, a line per finished trial, progress with best and ETA,
trial warnings once."""

from __future__ import annotations

from types import SimpleNamespace

from forest_seg.config import TrainConfig
from forest_seg.sweep import Study
from forest_seg.sweep.progress import Progress, TrialName, config_tag, config_words


def trial(tid: str, status: str, **config):
    return SimpleNamespace(trial_id=tid, status=status, config={"epochs": 4, **config},
                           last_result=None)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_trial_names_say_what_the_trial_is():
    config = {"points": 50, "lr": 1e-4, "seed": 0, "head": "unet", "epochs": 4}
    assert config_tag(config, ["points", "lr", "seed"]) == "p50_lr1e-04_s0"
    assert config_tag(config, ["head", "points"]) == "unet_p50"
    assert config_words(config, ["points", "lr", "seed"]) == "points=50 lr=1e-04 seed=0"
    name = TrialName(["points", "lr", "seed"])(SimpleNamespace(config=config, trial_id="ab_001"))
    assert name == "p50_lr1e-04_s0_ab_001"


def test_a_grid_names_what_varies_and_spans_its_values_in_the_param_space():
    study = Study(base=TrainConfig(points=50, lr=1e-4), trials=[
        {"points": p, "lr": 1e-3, "seed": s} for p in (10, 50) for s in (0, 1)])
    assert study.varying_keys() == ["points", "seed"]
    space = study.param_space()
    # a choice of the trials' values, so that Ray does not warn that a trial's value differs
    assert space["points"].categories == [10, 50] and space["lr"].categories == [1e-3]
    assert space["seed"].categories == [0, 1]
    assert space["batch_size"] == 16  # the rest of the base stays
    assert study.trial_count() == 4
    # a field only some trials set: the others keep the base value, set in their points (Ray
    # would sample a field a point leaves out), which the choice holds
    some = Study(base=TrainConfig(epochs=2), trials=[{"seed": 0, "epochs": 4}, {"seed": 1}])
    assert some.trial_points() == [{"seed": 0, "epochs": 4}, {"seed": 1, "epochs": 2}]
    assert some.param_space()["epochs"].categories == [4, 2]


def test_progress_prints_finished_trials_best_and_eta():
    lines, clock = [], Clock()
    progress = Progress(total=3, epochs=4, keys=["points", "seed"], clock=clock,
                        out=lambda text, flush=True: lines.append(text))
    a, b = trial("a", "RUNNING", points=10, seed=0), trial("b", "RUNNING", points=50, seed=0)
    trials = [a, b]
    clock.now = 20.0
    for t, score, epochs in ((a, 0.5, 4), (b, 0.6, 2)):
        for epoch in range(1, epochs + 1):
            progress.on_trial_result(0, trials, t, {"epoch": epoch, "epoch_time_s": 5.0,
                                                    "val_miou": score})
    a.status, a.last_result = "TERMINATED", {"epoch": 4, "val_miou": 0.55, "diverged": False}
    progress.on_trial_complete(0, trials, a)
    assert lines[0] == "trial 1/3 points=10 seed=0: COMPLETED, 4 epoch(s), final val_miou 0.5500"
    # 6 trial-epochs reported in 20 s; left: b's 2 of 4 epochs and an uncreated trial's 4 = 6
    # trial-epochs at that pace: 20 s
    assert lines[1] == ("[1 done, 1 running, 1 pending] best val_miou 0.6000 (points=50 seed=0)"
                        " | elapsed 0m20s, ETA ~0m20s")


def test_progress_lines_come_at_most_every_interval_and_warnings_once():
    lines, clock = [], Clock()
    progress = Progress(total=1, epochs=2, keys=["seed"], every_s=30, clock=clock,
                        out=lambda text, flush=True: lines.append(text))
    t = trial("a", "RUNNING", seed=0)
    clock.now = 10
    progress.on_step(0, [t])
    assert lines == []
    clock.now = 31
    progress.on_step(0, [t])
    progress.on_step(0, [t])  # the interval starts again after a line
    assert len(lines) == 1 and lines[0].startswith("[0 done, 1 running, 0 pending]")
    for _ in range(2):
        progress.on_trial_result(0, [t], t, {"epoch": 1, "trial_warnings": ["weights missing"]})
    assert lines[1:] == ["warning from trial seed=0: weights missing"]


def test_an_early_stopped_or_diverged_trial_says_so():
    lines = []
    progress = Progress(total=2, epochs=4, keys=["seed"], out=lambda t, flush=True: lines.append(t))
    stopped, diverged = trial("a", "TERMINATED", seed=0), trial("b", "TERMINATED", seed=1)
    stopped.last_result = {"epoch": 1, "val_miou": 0.4}
    diverged.last_result = {"epoch": 2, "val_miou": float("nan"), "diverged": True}
    progress.on_trial_complete(0, [stopped, diverged], stopped)
    progress.on_trial_complete(0, [stopped, diverged], diverged)
    assert "EARLY_STOPPED, 1 epoch(s), final val_miou 0.4000" in lines[0]
    assert "DIVERGED, 2 epoch(s), final val_miou n/a" in lines[2]


def test_a_trials_own_warnings_ride_along_with_its_next_report_once():
    import warnings
    from pathlib import Path

    import forest_seg
    from forest_seg.train import _new_warnings

    ours = str(Path(forest_seg.__file__).parent / "model.py")
    caught = [warnings.WarningMessage("ImageNet weights could not be had", UserWarning, ours, 1),
              warnings.WarningMessage("a library's deprecation", UserWarning, "/lib/torch/x.py", 1)]
    assert _new_warnings(caught) == {"trial_warnings": ["ImageNet weights could not be had"]}
    assert caught == [] and _new_warnings(caught) == {}  # each is handed on once
