"""Point-annotation simulation: turn a dense forest mask into a few labelled pixels.

Label convention: ``0`` non-forest, ``1`` forest, :data:`IGNORE_INDEX` (255) unlabelled.

A strategy is a function ``(mask, n_forest, n_points, generator) -> flat indices``
(``mask`` [H, W] contiguous integer in {0, 1}, ``n_forest`` its number of 1s; int64 indices into
``mask.view(-1)``, no repeats). The built-in ones are registered in ``_STRATEGIES``; a new one
lives in its own module ``forest_seg/points_<name>.py`` that defines ``STRATEGIES = {name:
function}``: every ``forest_seg.points_*`` module is imported on first use and its
``STRATEGIES`` join :data:`POINT_STRATEGIES` (built-ins first, then by module name), which
``TrainConfig`` and the CLIs validate against. The spatial strategies (``spread``,
``boundary``) need the 2-D shape; the others use the flattened mask.

Sampling is without replacement and exact. For ``balanced``, ``uniform`` and ``forest`` its cost
grows with ``n_points`` rather than with the tile size (see :func:`_draw`): labelling 5,000 tiles
of 256x256 takes a second or two on one core. ``spread`` and ``boundary`` add a few O(H*W)
passes per tile (cell sums, a max-pool dilation; their geometry lives in
:mod:`forest_seg.points_spatial`): a few seconds more.

A tile set's points come dense (:func:`sample_points_batch`, uint8 [N, H, W]) or sparse
(:func:`sample_points_sparse`, the same points as :class:`SparsePoints`: a few bytes per point,
which is how a trial holds them); :func:`scatter_points` makes a batch's dense map on a device.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from forest_seg import points_spatial as spatial
from forest_seg import strategy_registry as registry
from forest_seg.errors import ConfigError

IGNORE_INDEX = 255
"""Label of unlabelled pixels; the losses and metrics skip it. Fits in uint8."""

BOUNDARY_SHARE = 0.5
"""``boundary`` strategy: at least ``ceil(BOUNDARY_SHARE * n)`` of the ``n`` points lie in the
edge band (all of the band when it holds fewer pixels)."""

BOUNDARY_WIDTH = 3
"""``boundary`` strategy: the edge band is the pixels whose Chebyshev distance to a pixel of the
other class is at most this many pixels (so a straight edge gives a band ``2 * 3`` pixels wide)."""


def _draw(
    flat: torch.Tensor, cls: int | None, count: int, k: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``k`` distinct flat indices drawn uniformly among the ``count`` pixels of class ``cls``.

    ``flat`` is the mask flattened to [H*W] (integer, values in {0, 1}); ``cls=None`` means any
    pixel (``count`` is then H*W). Requires ``k <= count``. Returns int64 [k].

    When ``k`` is a sizeable share of the class, the class is enumerated and permuted. Otherwise
    pixel indices are drawn with replacement over the whole tile, those of another class
    dropped, until ``k`` distinct ones are found: the set of distinct values seen is, by symmetry,
    a uniformly random subset of the class, so a random ``k`` of it is a uniform sample without
    replacement, at a cost of about ``k * H*W / count`` draws instead of O(H*W).
    """
    device = flat.device
    if k == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    size = flat.numel()
    if 4 * k > count:
        order = torch.randperm(count, generator=generator, device=device)[:k]
        return order if cls is None else (flat == cls).nonzero().squeeze(1)[order]
    found = torch.empty(0, dtype=torch.int64, device=device)
    while found.numel() < k:
        # twice the expected number of draws for the missing points: rarely a second round
        n_draws = 2 * (k - found.numel()) * size // count + 16
        draws = torch.randint(size, (n_draws,), generator=generator, device=device)
        if cls is not None:
            draws = draws[flat[draws] == cls]
        found = torch.unique(torch.cat((found, draws)))
    return found[torch.randperm(found.numel(), generator=generator, device=device)[:k]]


def _split(k: int, want_forest: int, n_forest: int, n_other: int) -> tuple[int, int]:
    """(forest, non-forest) counts for ``k`` points aiming at ``want_forest`` forest ones, with
    ``n_forest`` / ``n_other`` pixels available: a short class is topped up by the other, so the
    two add up to ``min(k, n_forest + n_other)``."""
    k_forest = min(max(want_forest, 0), k, n_forest)
    k_other = min(k - k_forest, n_other)
    return min(k - k_other, n_forest), k_other


def _balanced(
    mask: torch.Tensor, n_forest: int, n_points: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``n // 2`` forest points and the rest (so the odd one) non-forest; a short class is topped
    up by the other, so ``min(n, H*W)`` points in all."""
    flat = mask.reshape(-1)
    n_other = flat.numel() - n_forest
    k_forest, k_other = _split(n_points, n_points // 2, n_forest, n_other)
    return torch.cat(
        (
            _draw(flat, 1, n_forest, k_forest, generator),
            _draw(flat, 0, n_other, k_other, generator),
        )
    )


def _uniform(
    mask: torch.Tensor, n_forest: int, n_points: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``min(n, H*W)`` pixels uniformly, whatever their class."""
    flat = mask.reshape(-1)
    return _draw(flat, None, flat.numel(), min(n_points, flat.numel()), generator)


def _forest(
    mask: torch.Tensor, n_forest: int, n_points: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Forest pixels only (the original report's choice): ``min(n, forest pixels)`` points."""
    return _draw(mask.reshape(-1), 1, n_forest, min(n_points, n_forest), generator)


def _spread(
    mask: torch.Tensor, n_forest: int, n_points: int, generator: torch.Generator | None
) -> torch.Tensor:
    """One point in each of ``k = min(n, H*W)`` random cells of a near-square grid of
    ``rows x cols >= k`` cells (see :func:`~forest_seg.points_spatial.grid_shape`),
    class-balanced as far as those cells allow (see :func:`sample_points`)."""
    (height, width), device = mask.shape, mask.device
    k = min(n_points, height * width)
    if k == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    rows, cols = spatial.grid_shape(k, height, width)
    cells = torch.randperm(rows * cols, generator=generator, device=device)[:k]
    row_edges = spatial.grid_edges(height, rows, device)
    col_edges = spatial.grid_edges(width, cols, device)
    row, col = cells // cols, cells % cols
    box = torch.stack((row_edges[row], row_edges[row + 1], col_edges[col], col_edges[col + 1]), 1)
    forest = spatial.cell_sums(mask, row_edges, col_edges).view(-1)[cells]
    area = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])
    pure_forest, mixed = forest == area, (forest > 0) & (forest < area)
    n_pure, n_mixed = int(pure_forest.sum()), int(mixed.sum())
    # as close to k // 2 forest points as the cells allow: pure cells give their class, the first
    # mixed cells (in the random order of ``cells``) give forest, the later ones non-forest
    k_mixed_forest = min(max(k // 2, n_pure), n_pure + n_mixed) - n_pure
    cls = pure_forest | (mixed & (mixed.cumsum(0) <= k_mixed_forest))
    return spatial.pick_in_cells(mask, box, cls.long(), generator)


def _boundary(
    mask: torch.Tensor, n_forest: int, n_points: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``ceil(BOUNDARY_SHARE * k)`` points in the edge band, half per class there, and the rest
    over the tile's other unlabelled pixels; see :func:`sample_points`.

    The class counts equal ``balanced``'s: the band takes at most ``k // 2`` forest points (more
    only if the band lacked non-forest pixels, impossible with an edge), so the rest can aim at
    ``k // 2 - band forest`` and top up the same way.
    """
    flat = mask.reshape(-1)
    size = flat.numel()
    if n_forest in (0, size):  # no edge
        return _balanced(mask, n_forest, n_points, generator)
    k = min(n_points, size)
    # codes: 0/1 non-forest/forest off the band, 2/3 non-forest/forest in the band
    code = flat + 2 * spatial.edge_band(mask, BOUNDARY_WIDTH).reshape(-1)
    band_forest = int((code == 3).sum())
    band_other = int((code == 2).sum())
    k_band = min(math.ceil(BOUNDARY_SHARE * k), band_forest + band_other)
    edge_forest, edge_other = _split(k_band, k_band // 2, band_forest, band_other)
    edge = torch.cat(
        (
            _draw(code, 3, band_forest, edge_forest, generator),
            _draw(code, 2, band_other, edge_other, generator),
        )
    )
    rest = flat.clone()
    rest[edge] = 2  # taken: neither class any more
    left_forest, left_other = n_forest - edge_forest, size - n_forest - edge_other
    k_forest, k_other = _split(k - len(edge), k // 2 - edge_forest, left_forest, left_other)
    return torch.cat(
        (
            edge,
            _draw(rest, 1, left_forest, k_forest, generator),
            _draw(rest, 0, left_other, k_other, generator),
        )
    )


Strategy = Callable[[torch.Tensor, int, int, torch.Generator | None], torch.Tensor]
_STRATEGIES: dict[str, Strategy] = {
    "balanced": _balanced,
    "uniform": _uniform,
    "forest": _forest,
    "spread": _spread,
    "boundary": _boundary,
}


def strategies() -> dict[str, Strategy]:
    """Every strategy by name: the built-ins, then the ``STRATEGIES`` of each
    ``forest_seg.points_*`` module (see the module docstring and
    :mod:`forest_seg.strategy_registry`, which names them without importing torch)."""
    return {**_STRATEGIES, **registry.plugin_strategies()}


def __getattr__(name: str) -> tuple[str, ...]:
    if name == "POINT_STRATEGIES":  # computed on first use: strategy modules register late
        return tuple(strategies())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_request(n_points: int, strategy: str) -> int:
    """Validate the user-facing arguments; return ``n_points`` as a Python int."""
    try:
        n = operator.index(n_points)
    except TypeError:
        n = -1
    if n < 0:
        raise ConfigError(f"points: expected a non-negative integer, got {n_points!r}")
    if strategy not in strategies():
        choices = ", ".join(strategies())
        raise ConfigError(f"point_strategy: unknown value {strategy!r}, expected one of {choices}")
    return n


def _check_mask_values(masks: torch.Tensor, name: str) -> None:
    """Masks must be integer tensors holding only 0 and 1; ``name`` is the argument's."""
    if masks.is_floating_point() or masks.is_complex():
        raise ValueError(f"{name}: expected an integer tensor of 0/1, got dtype {masks.dtype}")
    if masks.numel():
        low, high = int(masks.min()), int(masks.max())
        if low < 0 or high > 1:
            raise ValueError(f"{name}: expected values in {{0, 1}}, got values in [{low}, {high}]")


def _check_masks(masks: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``masks`` as a tensor, checked to be [N, H, W] integer 0/1."""
    masks = torch.as_tensor(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks: expected shape [N, H, W], got {tuple(masks.shape)}")
    _check_mask_values(masks, "masks")
    return masks


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch's CPU ops on the calling thread only, restoring the thread count after.

    One tile's ops are too small to share: intra-op threads only add wake-ups, which on a busy
    machine cost milliseconds per op (2 threads made ``spread`` and ``boundary`` 10-20 times
    slower on a loaded 2-core machine). GPU work is unaffected.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sample_points(
    mask: torch.Tensor,
    n_points: int,
    strategy: str = "balanced",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Simulate point annotation of one tile.

    Args:
        mask: integer (or bool) tensor [H, W] with values in {0, 1} (1 = forest).
        n_points: how many pixels to label, >= 0. ``0`` labels none (see
            :func:`sample_points_batch` for the dense-supervision meaning of 0 in training).
        strategy: one of :data:`POINT_STRATEGIES`:
            ``balanced``: ``n // 2`` forest and ``n - n // 2`` non-forest pixels (non-forest takes
            the odd point); when a class has too few pixels the other tops up, so exactly
            ``min(n, H*W)`` pixels are labelled.
            ``uniform``: ``min(n, H*W)`` pixels uniformly at random.
            ``forest``: forest pixels only, hence ``min(n, forest pixels)`` labels (none on a tile
            without forest).
            ``spread``: ``k = min(n, H*W)`` points, one in each of k distinct random cells of a
            near-square grid of ``rows x cols >= k`` cells (``rows <= H``, ``cols <= W``, fewer
            than ``cols`` cells left empty). Guarantee: at most one point per cell, so any
            ``H // rows`` x ``W // cols`` window holds at most 4 points; no bound on the
            distance between points of adjacent cells. Cells of one class give that class;
            mixed cells give forest or non-forest so that the forest count is as close to
            ``k // 2`` as the chosen cells allow; the pixel is uniform among the cell's pixels
            of its class.
            ``boundary``: ``ceil(BOUNDARY_SHARE * k)`` points (at most the whole band) in the edge
            band, the pixels within Chebyshev distance :data:`BOUNDARY_WIDTH` of the other
            class, ``balanced`` among the band's two classes; the rest uniformly among the
            pixels not yet labelled (the band included), per class so that the tile's class
            counts are exactly ``balanced``'s. Without an edge (a single-class tile) the points
            are drawn as ``balanced``. Exactly ``k`` labels.
        generator: torch generator on ``mask``'s device; the same seed gives the same points.
            ``None`` uses torch's global RNG.

    Returns:
        int64 tensor [H, W]: ``mask``'s value at the sampled pixels (distinct: drawn without
        replacement), :data:`IGNORE_INDEX` elsewhere.

    Raises:
        ConfigError: ``n_points`` negative or not an integer, or ``strategy`` unknown.
        ValueError: ``mask`` not 2-D, not integer, or holding values other than 0 and 1.
    """
    n = _check_request(n_points, strategy)
    if mask.ndim != 2:
        raise ValueError(f"mask: expected shape [H, W], got {tuple(mask.shape)}")
    _check_mask_values(mask, "mask")
    flat = mask.reshape(-1).long()
    labels = torch.full_like(flat, IGNORE_INDEX)
    with _one_thread():
        idx = strategies()[strategy](flat.view(mask.shape), int(flat.sum()), n, generator)
    labels[idx] = flat[idx]
    return labels.view(mask.shape)


def _tile_seed(seed: int, tile_id: int) -> int:
    """A 64-bit generator seed from (trial seed, tile id), stable across runs and platforms."""
    digest = hashlib.blake2b(f"{seed}/{tile_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True, eq=False)
class SparsePoints:
    """The point labels of ``N`` tiles of ``H x W`` pixels, held as their labelled pixels only.

    Tile ``i``'s labels are entries ``offsets[i]:offsets[i + 1]`` of ``pixels`` (its flat pixel
    indices ``row * W + col``, ascending) and ``values`` (the labels there, 0 or 1). A point
    costs 5 bytes and a tile 8 more: 50 points take 258 bytes per tile, where the dense uint8
    map of a 256 px tile takes 64 KiB.

    Attributes:
        offsets: int64 [N + 1], ``offsets[0] == 0``, non-decreasing (CPU).
        pixels: int32 [P] (CPU).
        values: uint8 [P] (CPU).
        tile_shape: ``(H, W)``.
    """

    offsets: torch.Tensor
    pixels: torch.Tensor
    values: torch.Tensor
    tile_shape: tuple[int, int]

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    @property
    def nbytes(self) -> int:
        """Bytes held by the three tensors."""
        return sum(t.numel() * t.element_size() for t in (self.offsets, self.pixels, self.values))

    @classmethod
    def from_dense(cls, labels: np.ndarray | torch.Tensor) -> SparsePoints:
        """The sparse form of dense label maps ``labels`` [N, H, W] (integer, CPU):
        every pixel not :data:`IGNORE_INDEX` is a point."""
        labels = torch.as_tensor(labels)
        if labels.ndim != 3:
            raise ValueError(f"labels: expected shape [N, H, W], got {tuple(labels.shape)}")
        flat = labels.reshape(labels.shape[0], -1)
        tile, pixel = (flat != IGNORE_INDEX).nonzero(as_tuple=True)  # row-major: ascending
        counts = torch.bincount(tile, minlength=labels.shape[0])
        return cls(_offsets(counts), pixel.to(torch.int32), flat[tile, pixel].to(torch.uint8),
                   (labels.shape[1], labels.shape[2]))

    def select(self, rows: np.ndarray | torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The points of tiles ``rows`` (int [B], positions in ``0..N-1``; default all) as
        ``(index, values)``: int64 [P'] flat indices into a [B, H, W] map of those tiles, in
        order, and uint8 [P'] their labels (CPU; see :func:`scatter_points`)."""
        rows = self._rows(rows)
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        total = int(lengths.sum())
        # entry j of selected tile k sits at out_start[k] + j in the output, starts[k] + j here
        out_start = lengths.cumsum(0) - lengths
        entry = torch.arange(total) + torch.repeat_interleave(starts - out_start, lengths,
                                                              output_size=total)
        tile_base = torch.arange(len(rows)) * (self.tile_shape[0] * self.tile_shape[1])
        index = torch.repeat_interleave(tile_base, lengths, output_size=total)
        return index + self.pixels[entry], self.values[entry]

    def to_dense(self, rows: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Dense labels of tiles ``rows`` (default all): uint8 [B, H, W], 0/1 at the points,
        :data:`IGNORE_INDEX` elsewhere (CPU)."""
        rows = self._rows(rows)
        return scatter_points(*self.select(rows), (len(rows), *self.tile_shape))

    def _rows(self, rows: np.ndarray | torch.Tensor | None) -> torch.Tensor:
        """int64 [B] tile positions: ``rows`` flattened, or all tiles."""
        if rows is None:
            return torch.arange(len(self))
        return torch.as_tensor(rows, dtype=torch.int64).reshape(-1)


def _offsets(counts: torch.Tensor) -> torch.Tensor:
    """int64 [N + 1] segment offsets from int [N] segment lengths."""
    return torch.cat((torch.zeros(1, dtype=torch.int64), counts.to(torch.int64).cumsum(0)))


def scatter_points(index: torch.Tensor, values: torch.Tensor, shape: Sequence[int]
                   ) -> torch.Tensor:
    """A dense label map on ``index``'s device: uint8 ``shape`` ([B, H, W]) holding ``values``
    (uint8 [P]) at the flat positions ``index`` (int64 [P], distinct) and
    :data:`IGNORE_INDEX` elsewhere. No host-device synchronisation."""
    labels = torch.full((math.prod(shape),), IGNORE_INDEX, dtype=torch.uint8, device=index.device)
    return labels.scatter_(0, index, values).view(*shape)


def sample_points_sparse(
    masks: np.ndarray | torch.Tensor,
    n_points: int,
    strategy: str = "balanced",
    seed: int = 0,
    *,
    tile_ids: Sequence[int] | None = None,
) -> SparsePoints:
    """:func:`sample_points_batch` in sparse form: the same points for the same arguments
    (``sample_points_sparse(...).to_dense()`` equals ``sample_points_batch(...)``), held in a few
    hundred bytes per tile instead of a dense map. ``n_points == 0`` (dense supervision) labels
    every pixel, as :func:`sample_points_batch` does; a trial keeps the masks instead.

    Raises: as :func:`sample_points_batch`.
    """
    n = _check_request(n_points, strategy)
    masks = _check_masks(masks)
    if n == 0:
        return SparsePoints.from_dense(masks)
    count = masks.shape[0]
    ids = range(count) if tile_ids is None else tile_ids
    if len(ids) != count:
        raise ValueError(f"tile_ids: expected {count} ids (one per mask), got {len(ids)}")
    flat = masks.reshape(count, -1).to(device="cpu", dtype=torch.uint8)
    tiles = flat.view(masks.shape)
    # one reduction for all tiles; numpy's, as torch's integer row sums are many times slower
    n_forest = flat.numpy().sum(axis=1, dtype=np.int64).tolist()
    sample = strategies()[strategy]
    generator = torch.Generator()
    chosen = [torch.empty(0, dtype=torch.int64)]
    with _one_thread():
        for i, tile_id in enumerate(ids):
            generator.manual_seed(_tile_seed(seed, int(tile_id)))
            chosen.append(sample(tiles[i], n_forest[i], n, generator))
    lengths = torch.tensor([len(idx) for idx in chosen[1:]], dtype=torch.int64)
    # one sort of the flat indices into all tiles: tiles occupy disjoint ranges in tile order,
    # so each tile's points stay in their place, ascending
    tile = torch.repeat_interleave(torch.arange(count), lengths)
    pixels = (torch.cat(chosen) + tile * flat.shape[1]).sort().values - tile * flat.shape[1]
    return SparsePoints(_offsets(lengths), pixels.to(torch.int32), flat[tile, pixels],
                        (masks.shape[1], masks.shape[2]))


def sample_points_batch(
    masks: np.ndarray | torch.Tensor,
    n_points: int,
    strategy: str = "balanced",
    seed: int = 0,
    *,
    tile_ids: Sequence[int] | None = None,
) -> torch.Tensor:
    """Point labels for every tile of a training set, drawn once per trial.

    A trial's points are fixed for its whole run (call this once, not per epoch). Tile ``i``'s
    points come from a generator seeded with ``(seed, tile_ids[i])`` only, so they do not depend
    on the order of the tiles or on which other tiles are in the set: two trials with the same
    seed label the same tile the same way.

    Args:
        masks: integer array or tensor [N, H, W] with values in {0, 1} (CPU).
        n_points: points per tile, as in :func:`sample_points`. ``0`` means **dense
            supervision** (the upper-bound reference): the masks themselves are returned.
        strategy: one of :data:`POINT_STRATEGIES` (see :func:`sample_points`).
        seed: the trial's seed.
        tile_ids: a stable identity per tile (e.g. its index in the whole dataset), length N;
            default ``range(N)``, the position in ``masks``. Pass dataset indices so that a tile
            keeps its points whatever split or subset it lands in.

    Returns:
        uint8 tensor [N, H, W]: 0/1 at labelled pixels, :data:`IGNORE_INDEX` elsewhere (a new
        tensor, also when ``n_points == 0``).

    Raises:
        ConfigError: bad ``n_points`` or ``strategy``.
        ValueError: ``masks`` not [N, H, W], not integer or not 0/1, or ``tile_ids`` of the
            wrong length.
    """
    n = _check_request(n_points, strategy)
    if n == 0:
        return _check_masks(masks).to(torch.uint8, copy=True)
    return sample_points_sparse(masks, n, strategy, seed, tile_ids=tile_ids).to_dense()
