"""Drawing a trial's point labels: seconds for a training set of full-size tiles.

A trial draws its points once (:func:`forest_seg.points.sample_points_batch`) before its first
epoch. The cost must not grow with tile area x points (a pass over the tile per point would
visit 300 x 256 x 256 x 200 = 4e9 pixels): ten times the points should cost far less than ten
times the time. Timed per strategy at a few and at many points per tile, on seeded random
masks (each tile's forest share drawn uniformly).
"""

from __future__ import annotations

import time

import torch

from forest_seg.points import sample_points_batch


def point_sampling_seconds(n_tiles: int = 300, size: int = 256, points: tuple[int, int] = (20, 200),
                           strategies: tuple[str, ...] = ("balanced", "spread", "boundary"),
                           seed: int = 0) -> dict[str, dict[int, float]]:
    """``{strategy: {n_points: seconds}}`` to label ``n_tiles`` masks of ``size`` px
    (uint8 [n_tiles,size,size]) with ``n_points`` points each."""
    generator = torch.Generator().manual_seed(seed)
    masks = (torch.rand(n_tiles, size, size, generator=generator)
             < torch.rand(n_tiles, 1, 1, generator=generator)).to(torch.uint8)
    seconds: dict[str, dict[int, float]] = {}
    for strategy in strategies:
        seconds[strategy] = {}
        for n_points in points:
            start = time.perf_counter()
            sample_points_batch(masks, n_points, strategy, seed=seed)
            seconds[strategy][n_points] = time.perf_counter() - start
    return seconds
