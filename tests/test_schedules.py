"""Learning-rate schedules: each curve against hand-computed values."""

import math

import pytest

from forest_seg.config import TrainConfig
from forest_seg.schedules import lr_for_epoch


def curve(schedule, epochs=5, warmup=0, history=()):
    cfg = TrainConfig(lr=1.0, epochs=epochs, lr_schedule=schedule, warmup_epochs=warmup)
    return [lr_for_epoch(cfg, e, list(history)[: e - 1]) for e in range(1, epochs + 1)]


def test_constant_is_the_reports_fixed_lr():
    assert curve("constant") == [1.0] * 5


def test_cosine_decays_from_lr_without_reaching_zero():
    # 4 steps: 0.5 * (1 + cos(pi * t / 4)) for t = 0..3
    expected = [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]
    assert curve("cosine", epochs=4) == pytest.approx(expected)


def test_warmup_ramps_linearly_then_hands_over():
    # 2 warm-up epochs: 1/3, 2/3; then cosine over the remaining 3 epochs
    lrs = curve("cosine", epochs=5, warmup=2)
    assert lrs[:2] == pytest.approx([1 / 3, 2 / 3])
    assert lrs[2:] == pytest.approx([1.0, 0.75, 0.25])


def test_onecycle_rises_then_anneals():
    # 10 epochs: peak after round(0.3 * 10) = 3 steps; start 1/25, end 1e-4
    lrs = curve("onecycle", epochs=10)
    assert lrs[0] == pytest.approx(0.04)
    assert lrs[1] == pytest.approx(0.04 + 0.96 / 3)
    assert lrs[3] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:], strict=False))


def test_plateau_halves_after_two_epochs_without_improvement():
    losses = [1.0, 0.9, 0.95, 0.92, 0.8, 0.85]
    history = [{"val_loss": v} for v in losses]
    # epoch 5 follows two non-improving epochs (3, 4): halved; epoch 6 sees 5 improve.
    assert curve("plateau", epochs=6, history=history) == [1, 1, 1, 1, 0.5, 0.5]
