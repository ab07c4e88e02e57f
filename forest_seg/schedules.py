"""Learning-rate schedules, one value per epoch.

``lr_for_epoch`` is a pure function of the config, the epoch and the metrics of the epochs
before it, so a resumed run (or a Population Based Training exploit that swaps the config)
sets exactly the lr an uninterrupted run would. Schedules (``TrainConfig.lr_schedule``):

- ``constant``: ``lr`` every epoch (the report).
- ``cosine``: cosine decay from ``lr`` over the epochs after warm-up, never reaching 0.
- ``onecycle``: from ``lr / 25`` up to ``lr`` over the first 30% of the epochs after warm-up,
  then cosine down to ``lr / 1e4`` at the last epoch.
- ``plateau``: ``lr`` halved whenever ``val_loss`` has not improved for 2 epochs in a row.

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
        return base * PLATEAU_FACTOR ** _plateau_reductions(history[warmup:epoch - 1])
    return base


def _one_cycle(base: float, step: int, steps: int) -> float:
    peak = max(1, round(ONECYCLE_RISE * steps))
    start = base / ONECYCLE_START_DIV
    if step < peak:
        return start + (base - start) * step / peak
    end = base / ONECYCLE_END_DIV
    fraction = (step - peak) / max(1, steps - 1 - peak)
    return end + (base - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction)))


def _plateau_reductions(history: Sequence[Mapping[str, Any]]) -> int:
    """How often the lr was halved after these epochs (ReduceLROnPlateau's rule, mode min)."""
    best, stale, reductions = math.inf, 0, 0
    for metrics in history:
        loss = metrics.get("val_loss", math.nan)
        if loss < best:
            best, stale = loss, 0
        else:
            stale += 1
            if stale >= PLATEAU_PATIENCE:
                reductions, stale = reductions + 1, 0
    return reductions
