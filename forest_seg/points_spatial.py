"""Geometry for the spatial point strategies of :mod:`forest_seg.points` (``spread``, ``boundary``).

A near-square grid of cells over a tile, the forest pixels per cell, one pixel of a given class
drawn uniformly inside each of some cells, and the band of pixels near a class edge. Masks are
[H, W] integer tensors in {0, 1}; everything runs on the mask's device, from the generator given.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def grid_shape(k: int, height: int, width: int) -> tuple[int, int]:
    """Near-square grid (rows, cols) of cells for ``1 <= k <= height * width`` points.

    ``rows * cols >= k``, ``rows <= height``, ``cols <= width``, and fewer than ``cols`` spare
    cells (``rows = ceil(k / cols)``). 16x16 with k=4: 2x2; 256x256 with k=50: 7x8; with k=200:
    14x15.
    """
    rows = min(height, max(1, round(math.sqrt(k * height / width))))
    cols = min(width, -(-k // rows))
    return -(-k // cols), cols


def grid_edges(size: int, parts: int, device: torch.device) -> torch.Tensor:
    """int64 [parts + 1]: ``i * size // parts``, the cell boundaries along one side (cells of
    ``size // parts`` or one more pixels, at least one as ``parts <= size``)."""
    return torch.arange(parts + 1, device=device) * size // parts


def cell_sums(mask: torch.Tensor, row_edges: torch.Tensor, col_edges: torch.Tensor) -> torch.Tensor:
    """int64 [rows, cols]: the mask's sum over each cell of the grid with those boundaries.

    One-hot [rows, H] @ mask @ one-hot [W, cols] in float64: exact (integer sums far below
    2**53), and no reduced-precision matmul mode (TF32, bf16) applies to float64.
    """
    (height, width), device = mask.shape, mask.device
    row_of = torch.searchsorted(row_edges, torch.arange(height, device=device), right=True) - 1
    col_of = torch.searchsorted(col_edges, torch.arange(width, device=device), right=True) - 1
    in_row = (row_of == torch.arange(len(row_edges) - 1, device=device)[:, None]).double()
    in_col = (col_of[:, None] == torch.arange(len(col_edges) - 1, device=device)).double()
    return (in_row @ mask.double() @ in_col).long()


_PICK_ROUNDS, _PICK_TRIES = 2, 8


def pick_in_cells(
    mask: torch.Tensor, box: torch.Tensor, cls: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """One pixel of class ``cls[j]`` uniformly at random inside rectangle ``box[j]``, for each j.

    ``box`` int64 [k, 4] as (top, bottom, left, right), half-open, each holding at least one
    pixel of its class ``cls`` [k]; returns flat indices into ``mask.view(-1)``, int64 [k].
    Rejection sampling first: the first of a few uniform candidates in the box that has the
    class is a uniform draw among the class's pixels there. Boxes where the class is too scarce
    to be hit that way are then enumerated (padded to the largest box), and their class pixel
    with the largest random key is taken. The cost is O(k) unless the class is scarce in many
    boxes, then O(area of those boxes).
    """
    (height, width), device = mask.shape, mask.device
    flat = mask.reshape(-1)
    picks = torch.empty(cls.numel(), dtype=torch.int64, device=device)
    todo = torch.arange(cls.numel(), device=device)
    for _ in range(_PICK_ROUNDS):
        top, bottom, left, right = box[todo, :, None].unbind(1)  # each [n, 1]
        u = torch.rand(
            (2, todo.numel(), _PICK_TRIES), generator=generator, device=device, dtype=torch.float64
        )
        # the minimum only guards against a product rounded up to the box size
        y = torch.minimum(top + (u[0] * (bottom - top)).long(), bottom - 1)
        x = torch.minimum(left + (u[1] * (right - left)).long(), right - 1)
        idx = y * width + x
        ok = flat[idx] == cls[todo, None]
        hit = ok.any(1)
        first = ok.to(torch.uint8).argmax(1)  # the first candidate of the class
        picks[todo[hit]] = idx[hit, first[hit]]
        todo = todo[~hit]
        if todo.numel() == 0:
            return picks
    top, bottom, left, right = (side[:, None, None] for side in box[todo].unbind(1))
    y = top + torch.arange(int((bottom - top).max()), device=device)[:, None]
    x = left + torch.arange(int((right - left).max()), device=device)
    idx = (y.clamp(max=height - 1) * width + x.clamp(max=width - 1)).flatten(1)
    ok = ((y < bottom) & (x < right)).flatten(1) & (flat[idx] == cls[todo, None])
    key = torch.rand(idx.shape, generator=generator, device=device, dtype=torch.float64)
    picks[todo] = idx.gather(1, torch.where(ok, key, -1.0).argmax(1, keepdim=True)).squeeze(1)
    return picks


def edge_band(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """bool [H, W]: the pixels within Chebyshev distance ``radius`` of a pixel of the other class.

    Max-pool dilation of both class masks with a ``(2r+1) x (2r+1)`` kernel (the tile border is
    no edge: the padding is -inf); a pixel is in the band when both dilations reach it, as each
    class's own dilation covers the class. The square pool is done as a row pool then a column
    pool with ``max_pool1d``: the same result as ``max_pool2d``, some 10-50 times faster on CPU.
    """
    height, width = mask.shape
    forest = mask.float()
    classes = torch.stack((forest, 1 - forest))  # [2, H, W]
    size = 2 * radius + 1
    near = F.max_pool1d(classes.view(2 * height, width), size, 1, radius).view(2, height, width)
    near = F.max_pool1d(near.transpose(1, 2).reshape(2 * width, height), size, 1, radius)
    return near.view(2, width, height).amin(0).T > 0  # transposed back: [H, W]
