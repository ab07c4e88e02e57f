"""When a trial saves a checkpoint: what it must keep, and no more.

A checkpoint of the full ResNet50 with its Adam state is about 284 MB; saving one every epoch
costs more than a GPU epoch of the report's study. So a trial checkpoints only:

- after its last epoch (the trial's result, and what a resumed sweep finds finished);
- after an epoch that diverged (the trial ends there: a retry must not train again);
- after every ``every``-th epoch, the epochs a scheduler needs (PBT copies a member's
  checkpoint at each perturbation interval; ASHA and FIFO need none: ``every=None``);
- after an epoch whose val mIoU beats every earlier epoch's, so that the trial's best model
  is kept (the sweep keeps the checkpoints of highest val mIoU: ``predict --experiment``);
- after an epoch that ends ``minutes`` or more after the last checkpoint (or the start), so a
  failure loses at most about that much training (``0`` = every epoch).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckpointPolicy:
    """Which epochs of a trial of ``epochs`` epochs save a checkpoint (module docstring)."""

    epochs: int
    every: int | None = None
    minutes: float = 5.0

    def due(self, epoch: int, seconds_since_last: float, diverged: bool = False,
            new_best: bool = False) -> bool:
        """Whether epoch ``epoch`` (1-based), finished ``seconds_since_last`` seconds after
        the previous checkpoint (or the trial's start), saves one; ``new_best``: its val mIoU
        beats every earlier epoch's."""
        return (
            epoch == self.epochs
            or diverged
            or new_best
            or (self.every is not None and epoch % self.every == 0)
            or seconds_since_last >= 60 * self.minutes
        )
