"""Decoded-tile cache vs decoding JPEGs per item.

Per item the uncached path does what the cache does once per machine: PIL-decode the image
JPEG (RGB, bilinear resize) and the mask JPEG (grayscale, nearest resize, threshold > 127);
the cached path copies the same item's uint8 arrays out of the memory-mapped cache files.
Both visit the items in one shuffled order, as an epoch does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from forest_seg.data import dataset_rows, decode_tile, find_dataset_root, load_tiles


def cache_speedup(root: str | Path, size: int, n_items: int | None = None,
                  seed: int = 0) -> dict[str, float]:
    """Seconds per item decoding JPEGs vs reading the decoded cache, and their ratio.

    The cache is built first (not timed); its files are then in the page cache, as on a node
    where trials run. Returns ``items``, ``decode_ms``, ``cache_ms`` (per item),
    ``speedup`` and ``dataset_tiles``.
    """
    root = find_dataset_root(root)
    rows = dataset_rows(root)
    tiles = load_tiles(root, size)
    n = len(rows) if n_items is None else min(n_items, len(rows))
    order = np.random.default_rng(seed).permutation(len(rows))[:n]

    start = time.perf_counter()
    for i in order:
        _, image, mask = rows[i]
        decode_tile(image, mask, size)
    decode = (time.perf_counter() - start) / n

    start = time.perf_counter()
    for i in order:
        np.array(tiles.images[i])
        np.array(tiles.masks[i])
    cached = (time.perf_counter() - start) / n
    return {"items": n, "decode_ms": 1e3 * decode, "cache_ms": 1e3 * cached,
            "speedup": decode / cached if cached else float("nan"),
            "dataset_tiles": len(rows)}
