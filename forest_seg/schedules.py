"""Learning-rate schedules, one value per epoch.

``lr_for_epoch`` is a pure function of the config, the epoch and the metrics of the epochs
before it, so a resumed run (or a Population Based Training exploit that swaps the config)
sets exactly the lr an uninterrupted run would. Schedules (``TrainConfig.lr_schedule``):

- ``constant``: ``lr`` every epoch (the report).
- ``cosine``: cosine decay from ``lr`` over the epochs after warm-up, never reaching 0.
- ``onecycle``: from ``lr / 25`` up to ``lr`` over the first 30% of the epochs after warm-up,
  then cosine down to ``lr / 1e4`` at the last epoch.
- ``plateau``: ``torch.optim.lr_scheduler.ReduceLROnPlateau``'s rule on ``val_loss`` (mode
  min, factor 0.5, patience 2, threshold 1e-4 relative, cooldown 0, min_lr 0, eps 1e-8): an
  epoch improves when its loss is below ``best * (1 - 1e-4)``; after the 3rd epoch in a row
  without improvement (patience counts the epochs after the best) the lr is halved (unless
  that changes it by no more than 1e-8) and the count restarts. NaN never improves.

``warmup_epochs`` = w > 0 precedes any of them with a linear ramp: epoch e <= w uses
``lr * e / (w + 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

LR_SCHEDULES = ("constant", "cosine", "onecycle", "plateau")
ONECYCLE_START_DIV = 25.0
ONECYCLE_END_DIV = 1e4
ONECYCLE_RISE = 0.3
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 2
PLATEAU_THRESHOLD = 1e-4  # relative
PLATEAU_EPS = 1e-8  # smaller lr changes are skipped


def lr_for_epoch(cfg: Any, epoch: int, history: Sequence[Mapping[str, Any]] = ()) -> float:
    """The lr of 1-based ``epoch`` under ``cfg.lr_schedule``; ``history`` holds the metrics of
    the epochs before it (only ``plateau`` reads it)."""
    base, warmup = cfg.lr, cfg.warmup_epochs
    if epoch <= warmup:
        return base * epoch / (warmup + 1)
    step, steps = epoch - warmup - 1, max(1, cfg.epochs - warmup)  # step in [0, steps)
    if cfg.lr_schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * step / steps))
    if cfg.lr_schedule == "onecycle":
        return _one_cycle(base, step, steps)
    if cfg.lr_schedule == "plateau":
        return _plateau_lr(base, history[warmup:epoch - 1])
    return base


def _one_cycle(base: float, step: int, steps: int) -> float:
    peak = max(1, round(ONECYCLE_RISE * steps))
    start = base / ONECYCLE_START_DIV
    if step < peak:
        return start + (base - start) * step / peak
    end = base / ONECYCLE_END_DIV
    fraction = (step - peak) / max(1, steps - 1 - peak)
    return end + (base - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction)))


def _plateau_lr(base: float, history: Sequence[Mapping[str, Any]]) -> float:
    """The lr after these epochs' ``val_loss`` values, stepped through ReduceLROnPlateau's rule
    (mode min, rel threshold, cooldown 0, min_lr 0) starting from ``base``."""
    lr, best, bad = base, math.inf, 0
    for metrics in history:
        loss = float(metrics.get("val_loss", math.nan))
        if loss < best * (1.0 - PLATEAU_THRESHOLD):
            best, bad = loss, 0
        else:
            bad += 1
        if bad > PLATEAU_PATIENCE:
            reduced = lr * PLATEAU_FACTOR
            if lr - reduced > PLATEAU_EPS:
                lr = reduced
            bad = 0
    return lr
