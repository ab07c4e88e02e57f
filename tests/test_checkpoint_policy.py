"""The checkpoint policy: which epochs of a trial save a checkpoint, for given settings and
epoch durations (a pure function; fit's use of it is tested in test_train.py)."""

import pytest

from forest_seg.checkpoint_policy import CheckpointPolicy


def checkpoint_epochs(policy: CheckpointPolicy, epoch_seconds: float,
                      diverged_at: int | None = None) -> list[int]:
    """The epochs that save, for epochs of ``epoch_seconds`` each (the clock restarts at each
    checkpoint, as in fit)."""
    saved, since_last = [], 0.0
    for epoch in range(1, policy.epochs + 1):
        since_last += epoch_seconds
        if policy.due(epoch, since_last, diverged=epoch == diverged_at):
            saved.append(epoch)
            since_last = 0.0
        if epoch == diverged_at:
            break
    return saved


@pytest.mark.parametrize("every, minutes, epoch_seconds, expected", [
    (None, 5.0, 10.0, [6]),  # a short grid trial: its last epoch only
    (None, 5.0, 60.0, [5, 6]),  # a minute per epoch: the 5th ends 5 minutes in
    (None, 5.0, 130.0, [3, 6]),  # 390 s at epoch 3, then 390 s again at epoch 6
    (None, 0.0, 10.0, [1, 2, 3, 4, 5, 6]),  # 0 minutes: every epoch
    (2, 5.0, 10.0, [2, 4, 6]),  # PBT's perturbation interval of 2
    (4, 5.0, 10.0, [4, 6]),  # ... of 4, and the last epoch
    (4, 5.0, 100.0, [3, 4, 6]),  # by time (300 s at epoch 3) and by need (epoch 4)
])
def test_checkpoint_epochs_for_given_settings(every, minutes, epoch_seconds, expected):
    policy = CheckpointPolicy(epochs=6, every=every, minutes=minutes)
    assert checkpoint_epochs(policy, epoch_seconds) == expected


def test_a_diverged_epoch_saves_so_a_retry_does_not_train_again():
    policy = CheckpointPolicy(epochs=6, every=None, minutes=5.0)
    assert checkpoint_epochs(policy, 10.0, diverged_at=2) == [2]


def test_a_new_best_epoch_saves_so_the_best_model_is_kept():
    from forest_seg.train import is_new_best

    policy = CheckpointPolicy(epochs=6, every=None, minutes=5.0)
    scores = [0.4, 0.5, 0.45, 0.5, float("nan"), 0.3]
    saved = [epoch for epoch in range(1, 7)
             if policy.due(epoch, 10.0, new_best=is_new_best(
                 [{"val_miou": s} for s in scores[:epoch]]))]
    # epochs 1 and 2 raise the best; 4 only ties it; 5 has no score; 6 is the last
    assert saved == [1, 2, 6]
