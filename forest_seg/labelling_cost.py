"""What a tile's labels cost: the annotation cost model, with no pandas, scipy or torch, so a
sweep driver prices a labelling budget (``grid.py --budget-hours``) before it starts Ray.

The cost model (:class:`CostModel`) prices a training tile's labels: ``points`` clicks cost
``points * seconds_per_point``; a dense mask (``points == 0``) costs ``seconds_per_mask``.
The analysis of what that buys is :mod:`forest_seg.analysis.cost`.

Defaults and their sources (change them with ``--seconds-per-point`` / ``--seconds-per-mask``
on ``sweeps/analyze.py`` and ``sweeps/grid.py``; measure your own annotators when you can):

- ``seconds_per_mask = 239.7``: a full per-pixel mask of a PASCAL VOC image (Bearman et al.,
  "What's the point", ECCV 2016). A two-class forest tile may be faster to paint; a tile with
  a ragged forest edge may be slower.
- ``seconds_per_point = 2.0``: an assumption, one click plus a forest / non-forest choice. The
  same study reports 22.1 s per image for one point per class present, which includes finding
  the classes among twenty, so it bounds a two-class click from above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from forest_seg.errors import ConfigError

SECONDS_PER_POINT = 2.0
SECONDS_PER_MASK = 239.7
DEFAULT_DELTA = 0.02  # a labelling within this much mIoU of the best one is adequate
DENSE_POINTS = 0  # the ``points`` of dense-mask supervision


def _number(points: object) -> float | int:
    """``points`` as a Python number (a numpy scalar from a frame, a float from a CSV)."""
    return points.item() if hasattr(points, "item") else points


@dataclass(frozen=True)
class CostModel:
    """Seconds of annotation per point click and per dense mask of one tile."""

    seconds_per_point: float = SECONDS_PER_POINT
    seconds_per_mask: float = SECONDS_PER_MASK

    def __post_init__(self) -> None:
        for name in ("seconds_per_point", "seconds_per_mask"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"invalid --{name.replace('_', '-')} {value!r}: expected a "
                                  "positive number of seconds")

    def seconds_per_tile(self, points: float) -> float:
        """Labelling seconds of one tile with ``points`` clicks (0 = a dense mask)."""
        points = _number(points)
        if points == DENSE_POINTS:
            return float(self.seconds_per_mask)
        return float(points) * self.seconds_per_point

    def hours(self, points: float, tiles: float) -> float:
        """Labelling hours of ``tiles`` training tiles with ``points`` clicks each."""
        return self.seconds_per_tile(points) * float(tiles) / 3600.0

    def tiles_for(self, hours: float, points: float) -> int:
        """How many tiles ``hours`` of labelling buy with ``points`` clicks each (rounded
        down: a budget is never overspent)."""
        if not (math.isfinite(hours) and hours > 0):
            raise ConfigError(f"invalid --budget-hours {hours!r}: expected a positive number")
        # the epsilon keeps an exact fit (e.g. 1 h of 100 s tiles = 36) from rounding down
        return math.floor(hours * 3600.0 / self.seconds_per_tile(points) + 1e-9)


def labelling_name(points: float) -> str:
    """``dense`` for points 0, else ``<n> points``."""
    points = _number(points)
    if points == DENSE_POINTS:
        return "dense"
    return f"{points:g} points" if isinstance(points, float) else f"{points} points"
