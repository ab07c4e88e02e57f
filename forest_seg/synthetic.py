"""Procedural forest tiles written in the Kaggle layout: the embedded default dataset.

Each tile mixes irregular forest regions (dark-to-mid greens with a high-frequency tree-crown
texture) with non-forest covers: striped fields, smooth meadows, bare soil, water, built-up
blocks with rectangular roofs, and roads. Colours overlap on purpose (green fields and meadows,
light forest, dark water, unlabelled lone trees on meadows and soil), so a net has to learn
texture and shape, not one colour. Tiles are grouped into scenes of about 8-16 tiles that
share a palette and lighting, so ``split="scene"`` is meaningful.

Everything is drawn from one ``numpy`` generator seeded by ``seed``: the same arguments give
the same bytes.
"""

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from forest_seg.cache import build_atomically, cache_dir
from forest_seg.errors import ConfigError

_JPEG_QUALITY = 90
# Non-forest cover palettes (RGB); each scene picks its own variant of every cover.
_FIELD_COLOURS = np.array(
    [[96, 124, 62], [168, 158, 100], [132, 112, 80], [120, 140, 75], [64, 90, 50]]
)
_MEADOW_COLOURS = np.array([[92, 118, 66], [118, 132, 80], [140, 138, 96], [70, 96, 52]])
_SOIL_COLOURS = np.array([[150, 118, 88], [172, 144, 110], [128, 100, 76], [96, 84, 62]])
_WATER_COLOURS = np.array([[38, 58, 66], [52, 72, 62], [70, 88, 96]])
_FOREST_COLOURS = np.array(
    [[52, 76, 42], [64, 88, 50], [80, 104, 60], [76, 84, 52], [96, 98, 64], [60, 72, 40]]
)
_ROOF_COLOURS = np.array([[190, 90, 70], [200, 200, 195], [110, 110, 115], [160, 150, 140]])
_ROAD_COLOUR = np.array([[165, 160, 150]])
_BUILT_GROUND = np.array([[122, 120, 116]])
_N_ROOFS = 12
# Colour-table slots per tile; roofs take the last _N_ROOFS slots.
_FIELD_A, _FIELD_B, _MEADOW, _SOIL, _WATER, _BUILT, _FOREST, _ROAD, _ROOF0 = range(9)


def _smooth_noise(rng: np.random.Generator, b: int, size: int, grid: int) -> np.ndarray:
    """[b, size, size] float32 noise of unit-ish variance, smooth at ``size / grid`` pixels.

    Bilinear upsampling of a ``grid`` x ``grid`` lattice, done with gathers rather than BLAS
    matmuls: exact, bit-reproducible and free of BLAS thread overheads.
    """
    grid = max(2, min(grid, size))
    coarse = rng.standard_normal((b, grid, grid), dtype=np.float32)
    pos = np.linspace(0, grid - 1, size, dtype=np.float32)
    lo = np.clip(np.floor(pos).astype(int), 0, grid - 2)
    frac = (pos - lo).astype(np.float32)
    rows = coarse[:, lo, :] * (1 - frac)[:, None] + coarse[:, lo + 1, :] * frac[:, None]
    return rows[:, :, lo] * (1 - frac) + rows[:, :, lo + 1] * frac


def _fractal(rng: np.random.Generator, b: int, size: int, grids: tuple[int, ...]) -> np.ndarray:
    """[b, size, size] sum of smooth noise octaves, each half the amplitude of the previous."""
    out = np.zeros((b, size, size), np.float32)
    for k, grid in enumerate(grids):
        out += _smooth_noise(rng, b, size, grid) * 0.5**k
    return out


def _scene_colours(rng: np.random.Generator, palette: np.ndarray, b: int) -> np.ndarray:
    """[b, 3] float32: one colour from ``palette`` for the scene, jittered per scene and tile."""
    scene = palette[rng.integers(0, len(palette))] + rng.normal(0, 8, 3)
    return (scene + rng.normal(0, 5, (b, 3))).astype(np.float32)


def _normal(rng: np.random.Generator, mean: float, std: float, shape: tuple) -> np.ndarray:
    """float32 Gaussian samples of ``shape``."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std) + np.float32(mean)


def _directions(rng: np.random.Generator, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Random unit vectors (dx, dy), each float32 [b,1,1].

    Normalised Gaussian pairs instead of cos/sin of an angle: only correctly rounded
    arithmetic, so the same seed gives the same bytes on every CPU (SIMD trig may differ).
    """
    v = rng.standard_normal((2, b, 1, 1)).astype(np.float32)
    v /= np.sqrt(v[0] ** 2 + v[1] ** 2) + np.float32(1e-12)
    return v[0], v[1]


def _render_scene(rng: np.random.Generator, b: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``b`` tiles of one scene: (images uint8 [b,S,S,3], forest masks bool [b,S,S]).

    Every pixel gets a slot in a per-tile colour table (scene palette, jittered per tile)
    times a per-pixel brightness modulation carrying the cover's texture.
    """
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    palettes = (_FIELD_COLOURS, _FIELD_COLOURS, _MEADOW_COLOURS, _SOIL_COLOURS, _WATER_COLOURS)
    roofs = _ROOF_COLOURS[rng.integers(0, len(_ROOF_COLOURS), (b, _N_ROOFS))]
    table = np.concatenate(
        [_scene_colours(rng, p, b)[:, None] for p in palettes]
        + [_scene_colours(rng, p, b)[:, None] for p in (_BUILT_GROUND, _FOREST_COLOURS)]
        + [_scene_colours(rng, _ROAD_COLOUR, b)[:, None], roofs.astype(np.float32)],
        axis=1,
    )  # [b, _ROOF0 + _N_ROOFS, 3]

    # Forest: threshold a fractal field at each tile's target fraction, drawn from a U-shaped
    # Beta with mean 0.6 (many near-empty and near-full tiles); ragged edges.
    field = _fractal(rng, b, s, (3, 6, 12, 24))
    flat = np.sort(field.reshape(b, -1), axis=1)
    frac = rng.beta(0.9, 0.6, b)
    idx = np.clip(np.round((1 - frac) * s * s).astype(int), 0, s * s - 1)
    thresh = np.where(frac > 0.995, -np.inf, flat[np.arange(b), idx])
    forest = field > thresh[:, None, None]
    road = _roads(rng, b, s, xx, yy)
    forest &= ~road

    # Non-forest covers: the argmax of per-cover smooth fields partitions the tile.
    n_covers = 5  # field, meadow, soil, water, built-up
    logits = _smooth_noise(rng, b * n_covers, s, 4).reshape(b, n_covers, s, s)
    logits += (_normal(rng, 0, 0.6, (n_covers,)) + _normal(rng, 0, 0.8, (b, n_covers)))[
        ..., None, None
    ]
    cover = logits.argmax(axis=1)
    # Lone trees on meadow and soil look like forest but are not labelled so: shape matters.
    lone_trees = (_smooth_noise(rng, b, s, s // 5) > 1.3) & ((cover == 1) | (cover == 2))
    cover = np.where(forest | lone_trees, 5, np.where(road, 6, cover))  # 5: forest look, 6: road
    parcel = np.where(_smooth_noise(rng, b, s, 3) > 0, _FIELD_A, _FIELD_B)
    built = _buildings(rng, b, s)
    slot = np.choose(cover, [parcel, _MEADOW, _SOIL, _WATER, built, _FOREST, _ROAD])

    # Textures: stripes on fields, mild noise on meadow/soil/water, crowns with dark gaps.
    dx, dy = _directions(rng, b)
    phase = (xx * dx + yy * dy) / rng.uniform(3, 9, (b, 1, 1)).astype(np.float32)
    stripes = 4 * np.abs(phase - np.floor(phase + 0.5)) - 1  # triangle wave in [-1, 1]
    crowns = _smooth_noise(rng, b, s, s // 3) + 0.5 * _smooth_noise(rng, b, s, s // 2)
    canopy = np.clip(0.95 + 0.35 * crowns, 0.4, 1.5) * _normal(rng, 1.0, 0.12, (b, 1, 1))
    texture = [
        1 + 0.12 * stripes,
        1 + 0.05 * _smooth_noise(rng, b, s, 8),
        1 + 0.1 * _fractal(rng, b, s, (8, 24)),
        1 + 0.03 * _smooth_noise(rng, b, s, 6),
        1,
        canopy,
        1,
    ]
    # Illumination: strong per-scene and mild per-tile brightness changes.
    light = _normal(rng, 1.0, 0.2, (1, 1, 1)) * _normal(rng, 1.0, 0.08, (b, 1, 1))
    shade = np.choose(cover, texture) * np.clip(light, 0.5, 1.6)

    img = table[np.arange(b)[:, None, None], slot] * shade[..., None]
    img += _normal(rng, 0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), forest


def _buildings(rng: np.random.Generator, b: int, s: int) -> np.ndarray:
    """[b,S,S] int64 colour slots of the built-up cover: ground or one of the roof slots."""
    lo = rng.uniform(-0.1 * s, s, (2, _N_ROOFS, b, 1, 1)).astype(np.float32)
    hi = lo + rng.uniform(0.05 * s, 0.2 * s, (2, _N_ROOFS, b, 1, 1)).astype(np.float32)
    pos = np.arange(s, dtype=np.float32)
    slot = np.full((b, s, s), _BUILT, np.int64)
    for r in range(_N_ROOFS):  # later roofs on top
        inside = ((pos >= lo[0, r]) & (pos < hi[0, r])) & ((pos >= lo[1, r]) & (pos < hi[1, r]))
        slot = np.where(inside.transpose(0, 2, 1), _ROOF0 + r, slot)
    return slot


def _roads(rng: np.random.Generator, b: int, s: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """[b,S,S] bool: up to two straight roads per tile (about 44% of tiles have one)."""
    road = np.zeros((b, s, s), bool)
    for _ in range(2):
        present = rng.random((b, 1, 1)) < 0.25
        dx, dy = _directions(rng, b)
        offset = rng.uniform(0, s, (b, 1, 1)).astype(np.float32)
        width = rng.uniform(1.5, max(2.0, s / 32), (b, 1, 1)).astype(np.float32)
        along = (xx - s / 2) * dx + (yy - s / 2) * dy + s / 2
        road |= present & (np.abs(along - offset) < width / 2)
    return road


def _scene_sizes(rng: np.random.Generator, n: int) -> list[int]:
    """Tiles per scene: about 8-16 (12 on average), at least two scenes when n >= 2."""
    k = min(n, max(2, n // 12))
    weights = rng.uniform(8, 16, k)
    sizes = 1 + np.floor(weights / weights.sum() * (n - k)).astype(int)
    sizes[rng.choice(k, n - int(sizes.sum()), replace=False)] += 1
    return sizes.tolist()


def make_synthetic_dataset(root: str | Path, n: int, size: int, seed: int) -> Path:
    """Write ``n`` procedural tiles of ``size`` x ``size`` px into ``root`` (Kaggle layout).

    Writes ``meta_data.csv`` (columns ``image,mask``, bare file names), RGB JPEGs
    ``images/<scene>_sat_<k>.jpg`` and mask JPEGs ``masks/<scene>_mask_<k>.jpg`` (three equal
    channels, 255 = forest, 0 = non-forest). Deterministic for the arguments. Returns ``root``.
    """
    if n < 1:
        raise ConfigError(f"synthetic dataset: n must be >= 1 tiles, got {n}")
    if size < 16:
        raise ConfigError(f"synthetic dataset: size must be >= 16 px, got {size}")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for s_idx, count in enumerate(_scene_sizes(rng, n)):
        scene = 100000 + 1000 * s_idx + int(rng.integers(0, 1000))
        images, masks = _render_scene(rng, count, size)
        for k in range(count):
            image_name, mask_name = f"{scene}_sat_{k:02d}.jpg", f"{scene}_mask_{k:02d}.jpg"
            Image.fromarray(images[k]).save(root / "images" / image_name, quality=_JPEG_QUALITY)
            mask_rgb = np.repeat(masks[k, :, :, None].astype(np.uint8) * 255, 3, axis=2)
            Image.fromarray(mask_rgb).save(root / "masks" / mask_name, quality=_JPEG_QUALITY)
            rows.append((image_name, mask_name))
    with open(root / "meta_data.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "mask"])
        writer.writerows(rows)
    return root


def default_synthetic_root(n: int = 512, size: int = 128, seed: int = 0) -> Path:
    """The embedded default dataset, generated once into ``cache_dir()``.

    Lives in ``cache_dir()/synthetic-n{n}-s{size}-seed{seed}``. It is written into a private
    temporary folder and renamed into place, so a crash or concurrent processes never leave a
    half-written dataset (:func:`forest_seg.cache.build_atomically`); an existing folder with
    ``meta_data.csv`` is reused as is.
    """
    final = cache_dir() / f"synthetic-n{n}-s{size}-seed{seed}"
    return build_atomically(
        final,
        lambda tmp: make_synthetic_dataset(tmp, n, size, seed),
        lambda folder: (folder / "meta_data.csv").is_file(),
    )
