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


def test_plateau_halves_after_three_epochs_without_improvement():
    losses = [1.0, 0.9, 0.95, 0.92, 0.91, 0.85, 0.9, 0.9, 0.9]
    history = [{"val_loss": v} for v in losses]
    # best 0.9 at epoch 2; epochs 3, 4, 5 do not improve: 3 > patience 2, so epoch 6 is
    # halved. Epoch 6 improves (0.85); 7, 8, 9 do not: epoch 10 is halved again.
    assert curve("plateau", epochs=10, history=history) == [1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5,
                                                             0.25]


def test_plateau_improvements_below_the_relative_threshold_do_not_count():
    # each loss is lower than the best 1.0, but not below 1.0 * (1 - 1e-4) = 0.9999
    history = [{"val_loss": v} for v in [1.0, 0.99995, 0.99992, 0.99991]]
    assert curve("plateau", epochs=5, history=history) == [1, 1, 1, 1, 0.5]


def test_plateau_starts_after_warmup_and_treats_nan_as_no_improvement():
    # warm-up epochs 1-2 are not counted; from epoch 3: best 0.5, then NaN, 0.6, NaN
    history = [{"val_loss": v} for v in [0.1, 0.1, 0.5, math.nan, 0.6, math.nan]]
    assert curve("plateau", epochs=7, warmup=2, history=history) == pytest.approx(
        [1 / 3, 2 / 3, 1, 1, 1, 1, 0.5])


@pytest.mark.parametrize("lr", [1.0, 1e-7])
@pytest.mark.parametrize(
    "losses",
    [[1.0, 0.9, 0.95, 0.92, 0.91, 0.85, 0.9, 0.9, 0.9, 0.7, 0.7],
     [1.0, 0.99995, 0.99992, 0.99991, 0.5, 0.49996, math.nan, 0.4, 0.41, 0.42, 0.43],
     [2.0] * 25],  # a long stall: at lr 1e-7 torch stops halving once a step is <= 1e-8
)
def test_plateau_sets_the_lrs_torch_reduce_lr_on_plateau_sets(losses, lr):
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5,
                                                           patience=2)
    expected = []
    for loss in losses:
        expected.append(optimizer.param_groups[0]["lr"])
        scheduler.step(loss)
    expected.append(optimizer.param_groups[0]["lr"])
    cfg = TrainConfig(lr=lr, epochs=len(losses) + 1, lr_schedule="plateau")
    history = [{"val_loss": v} for v in losses]
    got = [lr_for_epoch(cfg, e, history[: e - 1]) for e in range(1, cfg.epochs + 1)]
    assert got == expected
    assert min(got) < lr  # each sequence stalls long enough to reduce
