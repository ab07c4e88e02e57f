"""The "Forest Aerial Images for Segmentation" dataset on disk, in its Kaggle layout: finding
a dataset root and decoding its tiles into the cache, with numpy and no torch (so a sweep
driver prepares the tiles without importing it); :mod:`forest_seg.data` serves them as
tensors and splits them.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
