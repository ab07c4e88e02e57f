"""Tests for forest_seg.synthetic: layout, determinism, content statistics, the cached default."""

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from forest_seg import synthetic
from forest_seg import tiles as tile_files
from forest_seg.cache import cache_dir
from forest_seg.data import load_tiles, split_indices
from forest_seg.errors import ConfigError
from forest_seg.synthetic import default_synthetic_root, make_synthetic_dataset


@pytest.fixture(autouse=True)
def fresh_process_cache(monkeypatch):
    monkeypatch.setattr(tile_files, "_TILE_CACHE", {})


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """128 tiles of 32 px, seed 0 (module-wide: generated once)."""
    root = tmp_path_factory.mktemp("synth") / "ds"
    assert make_synthetic_dataset(root, n=128, size=32, seed=0) == root
    return root


def file_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_kaggle_layout_is_written_and_loadable(generated):
    with open(generated / "meta_data.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "mask"] and len(rows) == 129
    for image, mask in rows[1:]:
        scene, _, k = image.removesuffix(".jpg").partition("_sat_")
        assert mask == f"{scene}_mask_{k}.jpg"
    image, mask = rows[1]
    with Image.open(generated / "images" / image) as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (32, 32))
    with Image.open(generated / "masks" / mask) as im:
        assert (im.format, im.size) == ("JPEG", (32, 32))
    assert len(list((generated / "images").iterdir())) == 128
    assert len(list((generated / "masks").iterdir())) == 128
    tiles = load_tiles(generated, 32)
    assert tiles.images.shape == (128, 32, 32, 3) and tiles.masks.shape == (128, 32, 32)
    assert tiles.names == [r[0] for r in rows[1:]]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = file_bytes(make_synthetic_dataset(tmp_path / "a", n=12, size=32, seed=5))
    b = file_bytes(make_synthetic_dataset(tmp_path / "b", n=12, size=32, seed=5))
    c = file_bytes(make_synthetic_dataset(tmp_path / "c", n=12, size=32, seed=6))
    assert a == b
    assert len(a) == 12 * 2 + 1
    images_a = [a[k] for k in sorted(a) if k.startswith("images")]
    images_c = [c[k] for k in sorted(c) if k.startswith("images")]
    assert all(x != y for x, y in zip(images_a, images_c, strict=True))


def test_forest_fraction_varies_with_mean_near_real_data(generated):
    fractions = load_tiles(generated, 32).masks.mean(axis=(1, 2))
    assert (fractions < 0.1).sum() >= 3 and (fractions > 0.9).sum() >= 3
    assert ((fractions > 0.2) & (fractions < 0.8)).sum() >= 20  # mixed tiles too
    assert 0.45 < fractions.mean() < 0.75


def test_several_scenes_of_about_12_tiles_allow_a_scene_split(generated):
    scenes = load_tiles(generated, 32).scenes
    sizes = [scenes.count(s) for s in set(scenes)]
    assert len(sizes) == 128 // 12 and all(7 <= k <= 18 for k in sizes)
    train, val = split_indices(scenes, "scene", 0.2, seed=0)
    assert not {scenes[i] for i in train} & {scenes[i] for i in val}
    assert 0.1 < len(val) / 128 < 0.3


def test_tiny_datasets_still_have_two_scenes(tmp_path):
    scenes = load_tiles(make_synthetic_dataset(tmp_path, n=3, size=16, seed=0), 16).scenes
    assert len(set(scenes)) == 2
    assert len(load_tiles(make_synthetic_dataset(tmp_path / "one", 1, 16, 0), 16)) == 1


def test_masks_are_binary_jpegs_that_survive_thresholding(generated):
    raw = np.stack([np.asarray(Image.open(p)) for p in sorted((generated / "masks").iterdir())])
    assert raw.shape == (128, 32, 32, 3)
    assert (raw.max(axis=3).astype(int) - raw.min(axis=3) <= 2).all()  # three equal channels
    gray = raw[..., 0]
    assert ((gray > 40) & (gray < 215)).mean() < 0.02  # JPEG ringing only near edges
    assert set(np.unique(load_tiles(generated, 32).masks).tolist()) == {0, 1}


def test_jpeg_round_trip_keeps_the_drawn_masks(tmp_path):
    images, masks = synthetic._render_scene(np.random.default_rng(0), 8, 32)
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.uint8 and masks.dtype == bool
    for k in range(8):
        Image.fromarray(np.repeat(masks[k, :, :, None].astype(np.uint8) * 255, 3, 2)).save(
            tmp_path / "m.jpg", quality=synthetic._JPEG_QUALITY
        )
        decoded = np.asarray(Image.open(tmp_path / "m.jpg").convert("L")) > 127
        np.testing.assert_array_equal(decoded, masks[k])


def test_colour_alone_does_not_separate_forest(generated):
    """A per-pixel colour lookup fitted on the data itself (an upper bound) stays well below 1."""
    tiles = load_tiles(generated, 32)
    rgb = tiles.images.reshape(-1, 3).astype(np.int64) // 16
    label = tiles.masks.reshape(-1).astype(np.int64)
    code = (rgb[:, 0] * 16 + rgb[:, 1]) * 16 + rgb[:, 2]
    counts = np.bincount(code * 2 + label, minlength=2 * 16**3).reshape(-1, 2)
    accuracy = counts.max(axis=1).sum() / len(label)
    assert accuracy < 0.9
    forest, other = tiles.images[tiles.masks == 1], tiles.images[tiles.masks == 0]
    assert forest[:, 1].mean() > forest[:, 2].mean()  # forest is green ...
    assert np.percentile(other[:, 1], 10) < np.percentile(forest[:, 1], 90)  # ... but so is more


@pytest.mark.parametrize(("n", "size"), [(0, 32), (4, 8)])
def test_bad_arguments(tmp_path, n, size):
    with pytest.raises(ConfigError, match="n must be|size must be"):
        make_synthetic_dataset(tmp_path, n=n, size=size, seed=0)


def test_default_root_generated_once_then_reused(monkeypatch, own_cache):
    root = default_synthetic_root(n=20, size=32, seed=1)
    assert root == cache_dir() / "synthetic-n20-s32-seed1"
    assert len(load_tiles(root, 32)) == 20
    stamp = (root / "meta_data.csv").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("regenerated an existing dataset")

    monkeypatch.setattr(synthetic, "make_synthetic_dataset", fail)
    assert default_synthetic_root(n=20, size=32, seed=1) == root
    assert (root / "meta_data.csv").stat().st_mtime_ns == stamp
    assert not [p for p in cache_dir().iterdir() if ".tmp-" in p.name]


def test_default_root_crash_leaves_nothing_behind(monkeypatch, own_cache):
    real = synthetic.make_synthetic_dataset

    def crash(root, n, size, seed):
        real(root, n, size, seed)
        raise KeyboardInterrupt  # killed after writing, before the rename

    monkeypatch.setattr(synthetic, "make_synthetic_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        default_synthetic_root(n=6, size=16, seed=2)
    assert not [p for p in cache_dir().iterdir() if "n6-s16-seed2" in p.name]
    monkeypatch.setattr(synthetic, "make_synthetic_dataset", real)
    assert (default_synthetic_root(n=6, size=16, seed=2) / "meta_data.csv").is_file()


def test_default_root_concurrent_winner_is_reused(monkeypatch, own_cache):
    real_rename = os.rename

    def racing_rename(src, dst):
        shutil.copytree(src, dst)  # another process renamed its copy into place first
        real_rename(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "rename", racing_rename)
        root = default_synthetic_root(n=5, size=16, seed=3)
    assert len(load_tiles(root, 16)) == 5
    assert not [p for p in cache_dir().iterdir() if ".tmp-" in p.name]
