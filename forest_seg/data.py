"""The "Forest Aerial Images for Segmentation" dataset in its Kaggle layout.

A dataset root holds ``meta_data.csv`` (columns ``image,mask``: file names inside ``images/``
and ``masks/``), RGB JPEG tiles and JPEG masks (white = forest). Tiles are decoded once per
(root, size) into ``cache_dir()/tiles/<key>/`` and memory-mapped afterwards, so concurrent
trials on one node share one decoded copy through the page cache.

Masks are read per dataset in one of two conventions (:data:`MASK_CONVENTIONS`), detected
from the decoded grey values of all its masks: ``0/255`` (the Kaggle JPEGs: forest where
grey > 127) or ``0/1`` (many other datasets: forest where grey >= 1), chosen when no mask
pixel of the dataset is above 15 (JPEG noise lifts 0/1 masks to grey 2 or so; a 0/255
dataset with any forest has values near 255). A cache entry carries a manifest (tile count,
array shapes, dtypes and byte sizes, a checksum of the names, the mask convention); an entry
that does not match it is rebuilt, said in one warning line on stderr.
"""

import csv
import hashlib
import os
import sys
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from forest_seg.cache import (
    MASK_CONVENTIONS,
    TILE_CACHE_VERSION,
    build_atomically,
    cache_dir,
    discard,
    tile_entry_problem,
    write_tile_manifest,
)
from forest_seg.errors import ConfigError, DatasetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
META_CSV = "meta_data.csv"
EXPECTED_LAYOUT = "meta_data.csv (columns image,mask) beside images/ and masks/"
_SEARCH_DEPTH = 4
_MASK_THRESHOLD = 127
_ZERO_ONE_MAX = 15  # the largest grey value of a dataset whose masks are 0/1 (JPEG noise)
_PROGRESS_MIN_TILES = 500  # report decode progress on stderr above this many tiles
_TILE_CACHE: dict[str, "TileSet"] = {}
# What this process did to get decoded tiles: ``decoded`` cache entries it built (JPEGs
# decoded), ``mapped`` entries it memory-mapped; a warm process does neither again.
TILE_CACHE_EVENTS: Counter[str] = Counter()
_NORMALISATION: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def find_dataset_root(root: str | Path) -> Path:
    """The folder holding ``meta_data.csv``: ``root`` itself or the one folder below it that does.

    Searches breadth-first up to 4 levels deep, skipping hidden folders and the inside of a
    dataset folder (the Kaggle archive nests the data as ``Forest Segmented/Forest
    Segmented/``). A path to the CSV itself is accepted too. Raises :class:`DatasetError`
    when ``root`` is missing, holds no CSV, or holds more than one dataset (naming them:
    which one to train on is the user's choice, never picked silently).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(
            f"dataset root {root} does not exist; expected a folder holding "
            f"{EXPECTED_LAYOUT} (or a parent of it)"
        )
    if root.is_file() and root.name == META_CSV:
        return root.parent
    found: list[Path] = []
    queue = deque([(root, 0)])
    while queue:
        folder, depth = queue.popleft()
        if (folder / META_CSV).is_file():
            if folder == root:
                return root
            found.append(folder)
            continue
        if depth < _SEARCH_DEPTH:
            try:
                children = sorted(
                    e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")
                )
            except OSError:
                continue
            queue.extend((Path(c), depth + 1) for c in children)
    if len(found) > 1:
        raise DatasetError(
            f"{root} holds {len(found)} datasets ({META_CSV} in "
            f"{', '.join(str(f) for f in found)}); pass the folder of the one to use"
        )
    if found:
        return found[0]
    raise DatasetError(
        f"no {META_CSV} found in {root} or up to {_SEARCH_DEPTH} levels below it; "
        f"expected the Kaggle layout: {EXPECTED_LAYOUT}"
    )


def resolve_data_root(data: str | Path | None) -> Path:
    """``None`` -> the embedded synthetic dataset (generated once), else the dataset's folder."""
    if data is None:
        from forest_seg.synthetic import default_synthetic_root

        return default_synthetic_root()
    return find_dataset_root(data)


def scene_id(image_name: str) -> str:
    """The source scene of a tile: the prefix before ``_sat_`` (``10452_sat_08.jpg`` -> ``10452``).

    Names without ``_sat_`` fall back to the file stem, i.e. each such tile is its own scene.
    """
    stem = Path(image_name).stem
    prefix, sep, _ = stem.partition("_sat_")
    return prefix if sep and prefix else stem


@dataclass
class TileSet:
    """Decoded tiles of one dataset root at one size (arrays may be read-only memory maps).

    ``images``: uint8 [N,S,S,3] RGB. ``masks``: uint8 [N,S,S] in {0,1} (1 = forest).
    ``names``: image file names, CSV order. ``scenes``: :func:`scene_id` of each name.
    """

    images: np.ndarray
    masks: np.ndarray
    names: list[str]
    scenes: list[str]

    def __len__(self) -> int:
        return len(self.names)


def dataset_rows(root: Path) -> list[tuple[str, Path, Path]]:
    """(image name, image path, mask path) per CSV row, checking columns and files exist.

    The CSV may start with a UTF-8 byte-order mark. An image file listed twice is refused
    (naming it and its rows): it would sit in both training and validation.
    """
    csv_path = root / META_CSV
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                raise DatasetError(
                    f"{csv_path} is empty; expected a header image,mask and "
                    "one row of file names per tile"
                )
            columns = [c.strip() for c in reader.fieldnames]
            if "image" not in columns or "mask" not in columns:
                raise DatasetError(
                    f"{csv_path} must have columns image,mask; found {', '.join(columns)}"
                )
            reader.fieldnames = columns
            raw = [(row["image"], row["mask"]) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read {csv_path}: {e}") from e
    if not raw:
        raise DatasetError(f"{csv_path} lists no tiles; expected rows of image,mask file names")
    rows = []
    lines: dict[Path, list[int]] = {}
    for line, (image, mask) in enumerate(raw, start=2):
        paths = []
        for value, folder, column in ((image, "images", "image"), (mask, "masks", "mask")):
            value = (value or "").strip()
            path = root / folder / value
            if value and not path.is_file() and (root / value).is_file():
                path = root / value  # paths written relative to the root, e.g. images/x.jpg
            if not value or not path.is_file():
                raise DatasetError(f"{csv_path} row {line}: {column} file {path} does not exist")
            paths.append(path)
        rows.append((paths[0].name, paths[0], paths[1]))
        lines.setdefault(paths[0].resolve(), []).append(line)
    _refuse_duplicates(csv_path, lines)
    return rows


def _refuse_duplicates(csv_path: Path, lines: dict[Path, list[int]]) -> None:
    """Raise :class:`DatasetError` when an image file is listed on more than one CSV row."""
    repeated = {path: rows for path, rows in lines.items() if len(rows) > 1}
    if not repeated:
        return
    path, rows = next(iter(repeated.items()))
    more = f"; {len(repeated) - 1} more image file(s) repeated" if len(repeated) > 1 else ""
    raise DatasetError(
        f"{csv_path}: image file {path.name} is listed on rows {', '.join(map(str, rows))}{more}; "
        "each tile must be listed once (a repeat could sit in both training and validation)"
    )


def _cache_key(root: Path, rows: list[tuple[str, Path, Path]], size: int) -> str:
    """Hash of the cache format version, the resolved root, the CSV rows, each file's size and
    mtime, and ``size``."""
    h = hashlib.sha256(f"v{TILE_CACHE_VERSION}\n{root.resolve()}\n{size}\n".encode())
    for _, image, mask in rows:
        for path in (image, mask):
            st = path.stat()
            h.update(f"{path.relative_to(root)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def resize_pixels(
    image: Image.Image | np.ndarray, size: int, resample: int = Image.Resampling.BILINEAR
) -> np.ndarray:
    """uint8 [size,size,3] (or [size,size]) pixels of an RGB (or grey) image, resized as the
    training tiles are: PIL ``resample`` (bilinear for images, which PIL antialiases when
    shrinking; masks pass nearest). ``image``: a PIL image or uint8 [H,W,3] / [H,W] pixels.

    The one resize of tile images: predicting on new images must use it too, so that the
    net sees the same pixels it was trained on.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.size != (size, size):
        image = image.resize((size, size), resample)
    return np.asarray(image, dtype=np.uint8)


def _decode(path: Path, size: int, mode: str, resample: int, what: str) -> np.ndarray:
    """uint8 [size,size] (mode "L") or [size,size,3] (mode "RGB") pixels of an image file."""
    try:
        with Image.open(path) as im:
            return resize_pixels(im.convert(mode), size, resample)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot decode {what} {path}: {e}") from e


def _decode_image(path: Path, size: int) -> np.ndarray:
    """uint8 [size,size,3] RGB, bilinear resize (:func:`resize_pixels`)."""
    return _decode(path, size, "RGB", Image.Resampling.BILINEAR, "image")


def mask_convention(max_grey: int) -> str:
    """The mask convention of a dataset (a key of :data:`MASK_CONVENTIONS`) from the largest
    grey value of all its masks: ``0/1`` when it is <= 15 (1 in PNGs, about 2 in JPEGs),
    else ``0/255``."""
    return "0/1" if max_grey <= _ZERO_ONE_MAX else "0/255"


def threshold_mask(gray: np.ndarray, convention: str = "0/255") -> np.ndarray:
    """uint8 {0,1} of the same shape: 1 where a grayscale mask value is forest.

    ``0/255`` (JPEG masks, white = forest): grey > 127. ``0/1``: grey >= 1.
    """
    if convention not in MASK_CONVENTIONS:
        raise ValueError(f"mask convention must be one of {sorted(MASK_CONVENTIONS)}")
    if convention == "0/1":
        return (gray >= 1).astype(np.uint8)
    return (gray > _MASK_THRESHOLD).astype(np.uint8)


def _decode_mask(path: Path, size: int) -> np.ndarray:
    """uint8 [size,size] grey values of a mask: grayscale, nearest-neighbour resize."""
    return _decode(path, size, "L", Image.Resampling.NEAREST, "mask")


def decode_tile(
    image_path: Path, mask_path: Path, size: int, convention: str = "0/255"
) -> tuple[np.ndarray, np.ndarray]:
    """One tile as the cache holds it: the image uint8 [size,size,3] (RGB, bilinear resize)
    and its mask uint8 [size,size] in {0,1} (nearest resize, thresholded per ``convention``)."""
    mask = threshold_mask(_decode_mask(mask_path, size), convention)
    return _decode_image(image_path, size), mask


def _decode_into(folder: Path, root: Path, rows: list[tuple[str, Path, Path]], size: int) -> None:
    """Decode every row into ``folder``: images.npy, masks.npy, then names.json and the
    manifest (:func:`forest_seg.cache.write_tile_manifest`).

    Masks are decoded to grey values, the dataset's convention is detected from their
    maximum (:func:`mask_convention`) and they are thresholded in place. Raises
    :class:`DatasetError` when no mask holds a forest pixel.
    """
    TILE_CACHE_EVENTS["decoded"] += 1
    n = len(rows)
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, (n, size, size, 3))
    masks = np.lib.format.open_memmap(folder / "masks.npy", "w+", np.uint8, (n, size, size))
    step = -(-n // 10)
    if n > _PROGRESS_MIN_TILES:
        print(f"forest-seg: decoding {n} tiles of {root} at {size} px (once)", file=sys.stderr)
    max_grey = 0
    for i, (_, image, mask) in enumerate(rows):
        images[i], masks[i] = _decode_image(image, size), _decode_mask(mask, size)
        max_grey = max(max_grey, int(masks[i].max()))
        if n > _PROGRESS_MIN_TILES and ((i + 1) % step == 0 or i + 1 == n):
            print(f"forest-seg: decoded {i + 1}/{n} tiles", file=sys.stderr)
    convention = mask_convention(max_grey)
    forest = 0
    for i in range(n):
        masks[i] = threshold_mask(masks[i], convention)
        forest += int(masks[i].sum())
    if forest == 0:
        raise DatasetError(
            f"the masks of {root} hold no forest pixel: {n} tiles, grey values 0..{max_grey}, "
            f"read as {convention} masks ({MASK_CONVENTIONS[convention]}); expected masks with "
            "white (255) or 1 = forest"
        )
    images.flush()
    masks.flush()
    del images, masks
    write_tile_manifest(
        folder, [name for name, _, _ in rows], size, mask_convention=convention,
        max_mask_grey=max_grey, forest_fraction=forest / (n * size * size),
    )


def load_tiles(root: str | Path, size: int) -> TileSet:
    """Decode every tile of the dataset at ``root`` to ``size`` x ``size`` px, once.

    Images: RGB, bilinear resize. Masks: grayscale, nearest resize, thresholded per the
    dataset's detected convention (module docstring) -> {0,1}. The result is cached on disk
    under ``cache_dir()/tiles/<key>/`` (key: cache format version, resolved root, CSV rows,
    file sizes and mtimes, ``size``; written atomically, with a manifest) and loaded back as
    read-only memory maps; an entry that does not match its manifest is rebuilt, said in one
    stderr line. Repeat calls in one process return the same :class:`TileSet` object.
    Raises :class:`DatasetError` naming the CSV, row or file at fault, or a dataset without
    forest; :class:`~forest_seg.errors.ForestSegError` naming an unwritable cache folder.
    """
    root = find_dataset_root(root)
    if size < 1:
        raise ConfigError(f"image_size must be >= 1 px, got {size}")
    rows = dataset_rows(root)
    key = _cache_key(root, rows, size)
    if key in _TILE_CACHE:
        return _TILE_CACHE[key]
    final = cache_dir() / "tiles" / key
    names = [name for name, _, _ in rows]
    problem = tile_entry_problem(final, names, size)
    if problem not in (None, "missing"):
        print(f"forest-seg: warning: tile cache {final} is damaged ({problem}); rebuilding it",
              file=sys.stderr)
        discard(final)
    build_atomically(
        final,
        lambda tmp: _decode_into(tmp, root, rows, size),
        lambda folder: tile_entry_problem(folder, names, size) is None,
    )
    TILE_CACHE_EVENTS["mapped"] += 1
    tiles = TileSet(
        images=np.load(final / "images.npy", mmap_mode="r"),
        masks=np.load(final / "masks.npy", mmap_mode="r"),
        names=names,
        scenes=[scene_id(name) for name in names],
    )
    _TILE_CACHE[key] = tiles
    return tiles


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
