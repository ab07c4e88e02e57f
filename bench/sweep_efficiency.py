"""ASHA vs FIFO on one small grid, each run through ``sweeps/grid.py``.

The grid holds a hopeless configuration (lr 1e-9) so that early stopping has something to
stop; the comparison is :func:`forest_seg.analysis.compare_early_stopping` (trial-epochs spent
and whether both pick the same best configuration).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from forest_seg.analysis import compare_early_stopping, load_experiment

from .runs import fixed_flags, run_grid


@dataclass
class SweepSettings:
    data: str
    image_size: int = 32
    max_tiles: int = 96
    batch_size: int = 8
    encoder_stages: int = 1
    epochs: int = 4
    seeds: int = 1
    cpus: int = 2
    points: tuple[int, ...] = (10, 50)
    lrs: tuple[float, ...] = (1e-3, 1e-9)

    def flags(self, scheduler: str) -> list[str]:
        per_trial = 1
        return [
            "--scheduler", scheduler, "--points", *map(str, self.points),
            "--lrs", *map(str, self.lrs), "--base-lr", str(self.lrs[0]),
            "--base-points", str(self.points[-1]), "--seeds", str(self.seeds), "--no-dense",
            "--cpus-per-trial", str(per_trial), "--max-concurrent", str(max(1, self.cpus)),
            "--gpus-per-trial", "0", "--grace-period", "1", "--reduction-factor", "2",
            *fixed_flags({"data": self.data, "image_size": self.image_size,
                          "max_tiles": self.max_tiles, "batch_size": self.batch_size,
                          "encoder_stages": self.encoder_stages, "epochs": self.epochs,
                          "pretrained": "none", "device": "cpu", "threads": 1}),
        ]


def asha_vs_fifo(settings: SweepSettings, storage: Path, timeout_s: float) -> dict:
    """Run the grid with ASHA then FIFO; :func:`compare_early_stopping`'s dict plus
    ``asha_wall_s`` / ``fifo_wall_s`` (driver wall time, Ray start-up included)."""
    walls = {}
    frames = {}
    for scheduler in ("asha", "fifo"):
        run = run_grid(storage, f"sweep-{scheduler}", settings.flags(scheduler), timeout_s)
        walls[scheduler] = run.wall_s
        frames[scheduler], _ = load_experiment(run.path)
    result = compare_early_stopping(frames["asha"], frames["fifo"])
    result["asha_wall_s"], result["fifo_wall_s"] = walls["asha"], walls["fifo"]
    return result
