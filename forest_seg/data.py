"""The dataset as tensors: :class:`ForestAerialDataset`, ImageNet normalisation, and the
seeded train/validation splits.

The tiles on disk (the Kaggle layout, root discovery, the decoded-tile cache and its mask
conventions) are :mod:`forest_seg.tiles`, which imports no torch; its public names are
re-exported here, where the rest of the package and its users have always found them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from forest_seg.errors import ConfigError, DatasetError
from forest_seg.tiles import (
    EXPECTED_LAYOUT,
    MASK_CONVENTIONS,
    META_CSV,
    TILE_CACHE_EVENTS,
    TileSet,
    dataset_rows,
    decode_tile,
    find_dataset_root,
    load_tiles,
    mask_convention,
    resize_pixels,
    resolve_data_root,
    scene_id,
    threshold_mask,
)

__all__ = [
    "EXPECTED_LAYOUT", "IMAGENET_MEAN", "IMAGENET_STD", "MASK_CONVENTIONS", "META_CSV",
    "TILE_CACHE_EVENTS", "ForestAerialDataset", "TileSet", "dataset_rows", "decode_tile",
    "find_dataset_root", "load_tiles", "mask_convention", "normalize_images", "resize_pixels",
    "resolve_data_root", "scene_id", "select_tiles", "split_indices", "threshold_mask",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NORMALISATION: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet (mean, std), float32 [1,3,1,1] each, on ``device``: made once per device, so
    a batch costs no host-to-device copy of them (a blocking one, from pageable memory)."""
    constants = _NORMALISATION.get(device)
    if constants is None:
        with torch.inference_mode(False):  # plain tensors, whatever mode the first call is in
            constants = tuple(torch.tensor(values, device=device).view(1, 3, 1, 1)
                              for values in (IMAGENET_MEAN, IMAGENET_STD))
        _NORMALISATION[device] = constants
    return constants


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,H,W,3] (any device) -> float32 [B,3,H,W]: ``(x / 255 - mean) / std`` (ImageNet)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 [B,H,W,3] images, got {images.dtype} {list(images.shape)}"
        )
    mean, std = _normalisation(images.device)
    x = images.permute(0, 3, 1, 2).contiguous().float()
    return x.div_(255).sub_(mean).div_(std)


class ForestAerialDataset(torch.utils.data.Dataset):
    """Tiles of one dataset root (per :func:`resolve_data_root`; ``None`` = synthetic).

    Items: ``{"image": float32 [3,H,W] ImageNet-normalised, "mask": int64 [H,W] in {0,1}}``.
    ``indices`` selects a subset (e.g. from :func:`split_indices`); default all tiles.
    Pickling (spawned DataLoader workers) re-opens the memory-mapped cache, never copies it.
    """

    def __init__(
        self, root: str | Path | None, size: int = 256, indices: Sequence[int] | None = None
    ) -> None:
        self.root = resolve_data_root(root)
        self.size = size
        self.tiles = load_tiles(self.root, size)
        n = len(self.tiles)
        self.indices = (
            np.arange(n, dtype=np.int64)
            if indices is None
            else np.asarray(indices, dtype=np.int64).reshape(-1)
        )
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexError(
                f"indices must lie in [0, {n}) for {self.root}; got "
                f"{self.indices.min()}..{self.indices.max()}"
            )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = self.indices[i]
        image = torch.from_numpy(np.array(self.tiles.images[j]))
        mask = torch.from_numpy(self.tiles.masks[j].astype(np.int64))
        return {"image": normalize_images(image[None])[0], "mask": mask}

    def __getstate__(self) -> dict:
        return {"root": self.root, "size": self.size, "indices": self.indices}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.tiles = load_tiles(self.root, self.size)


def split_indices(
    scenes: Sequence[str],
    split: str = "random",
    val_fraction: float = 0.2,
    seed: int = 0,
    max_tiles: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of N tiles: (train, val) int64 index arrays, each sorted.

    ``scenes``: the scene of each tile (``TileSet.scenes``). With ``max_tiles`` < N a seeded
    random subset of that many tiles is split instead. ``random``: ``round(val_fraction * n)``
    random tiles (at least 1, leaving at least 1) go to validation. ``scene``: whole scenes, in
    seeded random order, go to validation while that brings it closer to ``val_fraction`` of
    the tiles; at least one scene stays in train, so no scene is on both sides.
    """
    if split not in ("random", "scene"):
        raise ConfigError(f"split must be 'random' or 'scene', got {split!r}")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if max_tiles is not None and max_tiles < 2:
        raise ConfigError(
            f"max_tiles must be >= 2 (one train and one validation tile) or None, got {max_tiles}"
        )
    n = len(scenes)
    if n < 2:
        raise DatasetError(f"a train/validation split needs at least 2 tiles, the dataset has {n}")
    rng = np.random.default_rng(seed)
    selected = _select(n, max_tiles, rng)
    m = len(selected)
    if split == "random":
        order = rng.permutation(selected)
        n_val = min(max(round(val_fraction * m), 1), m - 1)
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    tile_scenes = [scenes[i] for i in selected]
    counts = Counter(tile_scenes)
    distinct = sorted(counts)
    if len(distinct) < 2:
        raise DatasetError(
            f"split='scene' needs tiles from at least 2 scenes, the selected "
            f"{m} tiles all come from scene {distinct[0]!r}; use split='random'"
        )
    target = val_fraction * m
    val_scenes: set[str] = set()
    n_val = 0
    for k in rng.permutation(len(distinct)):
        scene = distinct[k]
        if n_val >= target or len(val_scenes) == len(distinct) - 1:
            break
        if not val_scenes or abs(n_val + counts[scene] - target) < abs(n_val - target):
            val_scenes.add(scene)
            n_val += counts[scene]
    in_val = np.array([scene in val_scenes for scene in tile_scenes], dtype=bool)
    return selected[~in_val], selected[in_val]


def select_tiles(n: int, max_tiles: int | None = None, seed: int = 0) -> np.ndarray:
    """int64 [m] sorted indices of the tiles used out of ``n``: all of them, or with
    ``max_tiles`` < n a seeded random subset of that many; the same subset that
    :func:`split_indices` splits for the same ``seed`` and ``max_tiles``."""
    return _select(n, max_tiles, np.random.default_rng(seed))


def _select(n: int, max_tiles: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_tiles is not None and max_tiles < n:
        return np.sort(rng.choice(n, size=max_tiles, replace=False)).astype(np.int64)
    return np.arange(n, dtype=np.int64)
