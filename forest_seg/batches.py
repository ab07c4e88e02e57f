"""A trial's data: decoded tiles, its split, its fixed point labels, and batches on the device.

The decoded tiles are shared (memory-mapped) by every trial on a node; a trial owns only its
index arrays and its point labels, which are drawn once when the trial starts and never again.
The points are held sparse (:class:`~forest_seg.points.SparsePoints`: a few hundred bytes per
tile); dense supervision uses the masks themselves. Batches are gathered from the uint8 tiles,
normalised on the device and given a dense label map scattered on the device from the sparse
points, so no JPEG work and no per-item Python work happen inside the epoch loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from .config import TrainConfig
from .data import (
    TileSet,
    find_dataset_root,
    load_tiles,
    normalize_images,
    resolve_data_root,
    select_tiles,
    split_indices,
)
from .errors import ConfigError, DatasetError
from .points import SparsePoints, sample_points_sparse, scatter_points
from .startup import StartupClock

# Keeps the validation points of a trial apart from its training points' random stream.
VAL_POINTS_SEED_OFFSET = 1_000_003
CAP_STREAM = 2  # the training-cap order draws from its own stream of the trial seed


@dataclass
class Batch:
    """One batch on the device.

    ``image`` float32 [B,3,S,S] ImageNet-normalised; ``labels`` int64 [B,S,S] point labels
    (255 = unlabelled); ``mask`` int64 [B,S,S] dense {0,1} mask.
    """

    image: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor


@dataclass
class SplitData:
    """One side (train or validation) of a trial.

    ``images`` uint8 [N,S,S,3] and ``masks`` uint8 [N,S,S] are the whole (shared) tile set;
    ``tiles`` int64 [n] selects this side's tiles; ``labels`` holds the point labels of those
    tiles, aligned with ``tiles`` (tile ``i`` of ``labels`` is ``tiles[i]``), or is ``None`` for
    dense supervision: every pixel labelled by its mask.
    """

    images: np.ndarray
    masks: np.ndarray
    tiles: np.ndarray
    labels: SparsePoints | None

    def dense_labels(self) -> torch.Tensor:
        """The labels of this side's tiles as dense maps: uint8 [n,S,S] (CPU), 255 where
        unlabelled; the masks for dense supervision."""
        if self.labels is None:
            return torch.from_numpy(self.masks[self.tiles])
        return self.labels.to_dense()

    def labelled_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """Every labelled pixel of this side's tiles: (uint8 [P,3] RGB, uint8 [P] 0/1 label),
        straight from the sparse points (every pixel, labelled by its mask, for dense
        supervision); no dense label map is built."""
        colours = self.images[self.tiles].reshape(-1, 3)
        if self.labels is None:
            return colours, self.masks[self.tiles].reshape(-1)
        index, values = self.labels.select()
        return colours[index.numpy()], values.numpy()

    def __len__(self) -> int:
        return len(self.tiles)

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        order: torch.Tensor | None = None,
        num_workers: int = 0,
        channels_last: bool = False,
        drop_single: bool = False,
    ) -> Iterator[Batch]:
        """Yield the batches of this side in ``order`` (positions into ``tiles``; default 0..n-1).

        With ``num_workers > 0`` that many threads gather and copy the next batches while the
        current one trains. ``drop_single`` drops a final batch of one tile (for training:
        BatchNorm cannot train on a single tile).
        """
        positions = torch.arange(len(self)) if order is None else order
        chunks = [c for c in positions.split(batch_size) if len(c) > 1 or not drop_single]

        def prepare(chunk: torch.Tensor) -> Batch:
            return self._gather(chunk.numpy(), device, channels_last)

        if num_workers == 0:
            yield from map(prepare, chunks)
            return
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            pending: deque = deque()
            for chunk in chunks:
                pending.append(pool.submit(prepare, chunk))
                if len(pending) > num_workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _gather(self, positions: np.ndarray, device: torch.device, channels_last: bool) -> Batch:
        tiles = self.tiles[positions]
        images = _to_device(self.images[tiles], device)
        masks = _to_device(self.masks[tiles], device).long()
        if self.labels is None:  # dense supervision: the masks are the labels
            labels = masks
        else:
            index, values = self.labels.select(positions)
            labels = scatter_points(_to_device(index, device), _to_device(values, device),
                                    masks.shape).long()
        image = normalize_images(images)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return Batch(image.contiguous(memory_format=memory_format), labels, masks)


def _to_device(data: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host data on ``device``; to a GPU through pinned memory without blocking the host."""
    tensor = torch.as_tensor(np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


@dataclass
class TrialData:
    """Everything a trial trains and validates on."""

    train: SplitData
    val: SplitData
    image_size: int


def _check_training_size(cfg: TrainConfig, n_train: int) -> None:
    """Raise :class:`DatasetError` when the training side holds fewer tiles than a batch."""
    if n_train >= cfg.batch_size:
        return
    tiles = "1 tile" if n_train == 1 else f"{n_train} tiles"
    fixes = "lower --batch-size" if cfg.val_data is not None else (
        "lower --val-fraction or --batch-size")
    if cfg.max_tiles is not None:
        fixes += ", or raise --max-tiles"
    if cfg.max_train_tiles is not None:
        fixes += f", or give more than max_train_tiles={cfg.max_train_tiles} (a larger budget)"
    raise DatasetError(
        f"data={cfg.data}: the training split has {tiles}, fewer than batch_size="
        f"{cfg.batch_size}: {fixes}"
    )


def cap_training_tiles(train_idx: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """int64 [min(n, cap)] sorted: the first ``cap`` of ``train_idx`` [n] in an order drawn
    from ``seed`` alone, so that for one seed a smaller cap's tiles are a subset of a larger
    one's (budgets compared on the same tiles where they overlap); all of them for None."""
    if cap is None or cap >= len(train_idx):
        return train_idx
    order = np.random.default_rng([seed, CAP_STREAM]).permutation(len(train_idx))
    return np.sort(train_idx[order[:cap]])


def prepare_trial_data(cfg: TrainConfig, clock: StartupClock | None = None) -> TrialData:
    """Load (or reuse) the decoded tiles, split them and draw the trial's fixed point labels.

    Without ``cfg.val_data`` the tiles of ``cfg.data`` are split (``split``, ``val_fraction``,
    ``max_tiles``, seeded). With it, every tile of ``cfg.data`` (a seeded ``max_tiles`` subset
    when capped) trains and every tile of ``cfg.val_data`` validates; nothing is split.
    ``max_train_tiles`` then keeps a nested seeded subset of the training side
    (:func:`cap_training_tiles`); validation is untouched.
    A tile's points depend only on (seed, tile index), so trials with the same seed label a
    tile the same way whatever the split or ``max_tiles``; they are held sparse
    (:func:`~forest_seg.points.sample_points_sparse`, the points of
    :func:`~forest_seg.points.sample_points_batch`), and ``points == 0`` (dense supervision)
    keeps no labels of its own: the masks are the labels. Validation labels use the same
    strategy and count as training (they give ``val_loss``); the dense validation masks give
    every ``val_*`` metric. Raises :class:`DatasetError` naming a missing or unusable root or
    a training side smaller than a batch, :class:`ConfigError` for more points than pixels.
    ``clock`` times the start-up parts ``data`` (the tiles) and ``points`` (split and labels).
    """

    def timed(part: str) -> AbstractContextManager:
        return nullcontext() if clock is None else clock.part(part)

    pixels = cfg.image_size**2
    if cfg.points > pixels:
        raise ConfigError(
            f"points={cfg.points} is more than the {pixels} pixels of a tile at "
            f"image_size={cfg.image_size}; use --points <= {pixels} (or 0 for dense supervision)"
        )
    with timed("data"):
        tiles = load_tiles(resolve_data_root(cfg.data), cfg.image_size)
        val_tiles = tiles if cfg.val_data is None else _validation_tiles(cfg)
    if cfg.val_data is None:
        train_idx, val_idx = split_indices(
            tiles.scenes, split=cfg.split, val_fraction=cfg.val_fraction, seed=cfg.seed,
            max_tiles=cfg.max_tiles,
        )
    else:
        train_idx = select_tiles(len(tiles), cfg.max_tiles, cfg.seed)
        val_idx = np.arange(len(val_tiles), dtype=np.int64)
    train_idx = cap_training_tiles(train_idx, cfg.max_train_tiles, cfg.seed)
    _check_training_size(cfg, len(train_idx))

    def side(source: TileSet, indices: np.ndarray, seed: int) -> SplitData:
        labels = None if cfg.points == 0 else sample_points_sparse(
            source.masks[indices], cfg.points, strategy=cfg.point_strategy, seed=seed,
            tile_ids=indices,
        )
        return SplitData(source.images, source.masks, indices, labels)

    with timed("points"):
        return TrialData(
            train=side(tiles, train_idx, cfg.seed),
            val=side(val_tiles, val_idx, cfg.seed + VAL_POINTS_SEED_OFFSET),
            image_size=cfg.image_size,
        )


def _validation_tiles(cfg: TrainConfig) -> TileSet:
    """The decoded tiles of ``cfg.val_data``; a DatasetError names the field."""
    try:
        return load_tiles(find_dataset_root(cfg.val_data), cfg.image_size)
    except DatasetError as e:
        raise DatasetError(f"val_data: {e}") from e
