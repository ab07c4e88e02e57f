"""Tests for forest_seg.data on hand-made tiny datasets (pixel values known) and the real sample."""

import csv
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from forest_seg import data, synthetic
from forest_seg import tiles as tile_files
from forest_seg.cache import cache_dir
from forest_seg.data import (
    ForestAerialDataset,
    find_dataset_root,
    load_tiles,
    resize_pixels,
    select_tiles,
    split_indices,
)
from forest_seg.errors import ConfigError, DatasetError

# Flat tile colours: JPEG at quality 100 keeps flat 8x8 blocks within +-2.
COLOURS = [(200, 50, 10), (10, 120, 240), (0, 0, 0), (255, 255, 255), (90, 160, 30)]
# 16x16 masks made of 8x8 blocks (top-left, top-right, bottom-left, bottom-right), exact in JPEG.
BLOCKS = [(255, 0, 0, 255), (0, 0, 0, 0), (255, 255, 255, 255), (128, 127, 200, 60), (0, 255, 0, 0)]
NAMES = ["100_sat_1.jpg", "100_sat_2.jpg", "200_sat_1.jpg", "200_sat_2.jpg", "odd.jpg"]


@pytest.fixture(autouse=True)
def fresh_process_cache(monkeypatch):
    """Each test starts with an empty in-process tile cache."""
    monkeypatch.setattr(tile_files, "_TILE_CACHE", {})


def block_mask(blocks: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 [16,16] made of four flat 8x8 blocks."""
    return np.kron(np.reshape(blocks, (2, 2)), np.ones((8, 8))).astype(np.uint8)


def write_dataset(root: Path, n: int = 5, csv_rows: list[list[str]] | None = None) -> Path:
    """Write the first ``n`` hand-made tiles (16x16 JPEGs, RGB masks) in the Kaggle layout."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for name, colour, blocks in list(zip(NAMES, COLOURS, BLOCKS, strict=True))[:n]:
        image = np.broadcast_to(np.array(colour, np.uint8), (16, 16, 3))
        Image.fromarray(image).save(root / "images" / name, quality=100)
        mask_name = name.replace("_sat_", "_mask_").replace("odd", "odd_mask")
        mask = np.repeat(block_mask(blocks)[:, :, None], 3, axis=2)
        Image.fromarray(mask).save(root / "masks" / mask_name, quality=100)
        rows.append([name, mask_name])
    with open(root / "meta_data.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "mask"], *(csv_rows if csv_rows is not None else rows)])
    return root


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_dataset(tmp_path / "tiny")


def count_decodes(monkeypatch) -> list[Path]:
    """Record every image/mask decode from now on."""
    calls: list[Path] = []
    for fn in ("_decode_image", "_decode_mask"):
        original = getattr(tile_files, fn)
        monkeypatch.setattr(tile_files, fn, lambda p, s, f=original: calls.append(p) or f(p, s))
    return calls


def tmp_leftovers() -> list[Path]:
    """Half-written cache folders left in the tile cache."""
    return [p for p in (cache_dir() / "tiles").glob(".*") if ".tmp-" in p.name]


def test_find_dataset_root_itself_nested_and_csv_path(tmp_path):
    inner = write_dataset(tmp_path / "Forest Segmented" / "Forest Segmented")
    assert find_dataset_root(inner) == inner
    assert find_dataset_root(tmp_path) == inner
    assert find_dataset_root(str(tmp_path / "Forest Segmented")) == inner
    assert find_dataset_root(inner / "meta_data.csv") == inner
    assert data.resolve_data_root(tmp_path) == inner
    (inner / "images" / "meta_data.csv").write_text("image,mask\n")  # inside a dataset: no
    (tmp_path / ".hidden").mkdir()  # hidden folders are not searched
    (tmp_path / ".hidden" / "meta_data.csv").write_text("image,mask\n")
    assert find_dataset_root(tmp_path) == inner


def test_two_datasets_below_data_are_refused_naming_both(tmp_path):
    write_dataset(tmp_path / "Forest Segmented" / "Forest Segmented")
    (tmp_path / "a" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "a" / "deep" / "er" / "meta_data.csv").write_text("image,mask\n")
    with pytest.raises(DatasetError, match="holds 2 datasets") as e:
        find_dataset_root(tmp_path)
    for folder in ("Forest Segmented/Forest Segmented", "a/deep/er"):
        assert str(tmp_path / folder) in str(e.value)
    assert find_dataset_root(tmp_path / "a") == tmp_path / "a" / "deep" / "er"  # one: fine


def test_find_dataset_root_errors_name_path_and_layout(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as e:
        find_dataset_root(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(e.value)
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"meta_data\.csv.*image,mask.*images/ and masks/") as e:
        find_dataset_root(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_resolve_data_root_none_is_the_embedded_synthetic_dataset(monkeypatch, tmp_path):
    monkeypatch.setattr(synthetic, "default_synthetic_root", lambda: tmp_path / "synth")
    assert data.resolve_data_root(None) == tmp_path / "synth"


def test_scene_id():
    assert data.scene_id("10452_sat_08.jpg") == "10452"
    assert data.scene_id("images/7_sat_1.jpg") == "7"
    assert data.scene_id("odd.jpg") == "odd"  # no _sat_: the tile is its own scene
    assert data.scene_id("_sat_3.jpg") == "_sat_3"


def test_threshold_mask_is_strictly_above_127():
    gray = np.array([0, 1, 126, 127, 128, 129, 200, 255], np.uint8)
    assert data.threshold_mask(gray).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert data.threshold_mask(gray).dtype == np.uint8


def test_load_tiles_values_shapes_and_names(tiny):
    tiles = load_tiles(tiny, 16)
    assert tiles.images.shape == (5, 16, 16, 3) and tiles.images.dtype == np.uint8
    assert tiles.masks.shape == (5, 16, 16) and tiles.masks.dtype == np.uint8
    assert tiles.names == NAMES
    assert tiles.scenes == ["100", "100", "200", "200", "odd"]
    for k, colour in enumerate(COLOURS):
        assert np.abs(tiles.images[k].astype(int) - colour).max() <= 2
    # JPEG keeps flat 8x8 blocks exact, so 127 stays 127 (-> 0) and 128 stays 128 (-> 1).
    assert np.asarray(Image.open(tiny / "masks" / "200_mask_2.jpg").convert("L"))[0, 0] == 128
    for k, blocks in enumerate(BLOCKS):  # tiles 1 and 2: no forest / all forest are fine
        expected = (block_mask(blocks) > 127).astype(np.uint8)
        np.testing.assert_array_equal(tiles.masks[k], expected)
    assert tiles.masks[3].tolist()[0][:9] == [1] * 8 + [0]  # 128 | 127


@pytest.mark.parametrize("size", [8, 12, 20])
def test_resize_images_bilinear_masks_nearest(tiny, size):
    tiles = load_tiles(tiny, size)
    assert tiles.images.shape == (5, size, size, 3)
    assert np.abs(tiles.images[1].astype(int) - COLOURS[1]).max() <= 3  # flat stays flat
    half = size // 2  # block edges stay sharp: nearest neighbour, then threshold
    for k, (tl, tr, bl, br) in enumerate(BLOCKS):
        expected = np.zeros((size, size), np.uint8)
        expected[:half, :half], expected[:half, half:] = tl > 127, tr > 127
        expected[half:, :half], expected[half:, half:] = bl > 127, br > 127
        np.testing.assert_array_equal(tiles.masks[k], expected)


def test_image_resize_smooths_mask_resize_is_nearest(tmp_path):
    root = write_dataset(tmp_path / "d", n=1)
    columns = np.zeros((16, 16, 3), np.uint8)
    columns[:, 1::2] = 255  # alternating 1-px columns: bilinear averages them to mid-grey
    Image.fromarray(columns).save(root / "images" / "100_sat_1.jpg", quality=100)
    assert np.abs(load_tiles(root, 8).images[0].astype(int) - 128).max() < 30
    lines = np.zeros((16, 16, 3), np.uint8)
    lines[1::4] = 255  # 1-px forest lines on rows 1, 5, 9, 13
    Image.fromarray(lines).save(root / "masks" / "100_mask_1.jpg", quality=100)
    assert (
        np.asarray(Image.open(root / "masks" / "100_mask_1.jpg").convert("L")) > 127
    ).sum() == 64
    # Nearest samples source row 2i+1 for target row i: every other target row is a line.
    # Any smoothing would average a line with its neighbours and fall below the threshold.
    assert load_tiles(root, 8).masks[0].tolist() == [[1] * 8, [0] * 8] * 4


def test_csv_paths_relative_to_root_are_accepted(tmp_path):
    root = write_dataset(tmp_path / "d", n=2)
    rows = [[f"images/{n}", f"masks/{n.replace('_sat_', '_mask_')}"] for n in NAMES[:2]]
    write_dataset(tmp_path / "e", n=2, csv_rows=rows)
    np.testing.assert_array_equal(load_tiles(tmp_path / "e", 16).masks, load_tiles(root, 16).masks)


def test_normalize_images_exact_values_layout_and_dtype():
    images = torch.tensor([[[[255, 0, 128]]]], dtype=torch.uint8)  # [1,1,1,3]
    out = data.normalize_images(images)
    assert out.shape == (1, 3, 1, 1) and out.dtype == torch.float32
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    torch.testing.assert_close(out.flatten(), torch.tensor(expected), rtol=0, atol=1e-6)
    batch = torch.randint(0, 256, (2, 4, 5, 3), dtype=torch.uint8)
    out = data.normalize_images(batch)
    assert out.shape == (2, 3, 4, 5) and out.is_contiguous()
    c = 2
    ref = (batch[1, 3, 4, c].item() / 255 - data.IMAGENET_MEAN[c]) / data.IMAGENET_STD[c]
    assert out[1, c, 3, 4].item() == pytest.approx(ref, abs=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        data.normalize_images(batch.float())


def test_normalize_images_makes_its_constants_once_per_device(monkeypatch):
    """A batch costs no host-to-device copy of the ImageNet constants (on a GPU a blocking
    one): after the device's first call, no tensor is made from Python values."""
    images = torch.tensor([[[[0, 255, 51]]]], dtype=torch.uint8)
    first = data.normalize_images(images)
    made = []
    tensor = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *args, **kwargs: made.append(args) or
                        tensor(*args, **kwargs))
    again = data.normalize_images(images)
    assert made == []
    expected = [-0.485 / 0.229, (1 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    torch.testing.assert_close(again.flatten(), tensor(expected), rtol=0, atol=1e-6)
    assert torch.equal(again, first)


def test_dataset_items(tiny):
    ds = ForestAerialDataset(tiny.parent, size=16, indices=[4, 0])
    assert ds.root == tiny and ds.size == 16 and len(ds) == 2
    assert ds.indices.dtype == np.int64 and ds.indices.tolist() == [4, 0]
    item = ds[1]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (16, 16) and item["mask"].dtype == torch.int64
    torch.testing.assert_close(
        item["image"],
        data.normalize_images(torch.from_numpy(np.array(ds.tiles.images[0]))[None])[0],
    )
    assert item["mask"].tolist() == (block_mask(BLOCKS[0]) > 127).astype(int).tolist()
    assert set(ds[0]["mask"].unique().tolist()) <= {0, 1}
    assert len(ForestAerialDataset(tiny, size=16)) == 5
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        ForestAerialDataset(tiny, size=16, indices=[0, 5])
    blob = pickle.dumps(ds)  # spawned DataLoader workers: no copy of the tiles travels
    assert len(blob) < 16 * 16 * 3
    copy = pickle.loads(blob)
    assert copy.indices.tolist() == [4, 0]
    torch.testing.assert_close(copy[1]["image"], item["image"])


def test_disk_cache_decodes_once_then_memory_maps(tiny, monkeypatch, own_cache):
    calls = count_decodes(monkeypatch)
    first = load_tiles(tiny, 16)
    assert len(calls) == 10  # 5 images + 5 masks
    assert load_tiles(tiny, 16) is first and len(calls) == 10  # in-process cache
    monkeypatch.setattr(tile_files, "_TILE_CACHE", {})
    again = load_tiles(tiny, 16)  # another process: reads the disk cache, decodes nothing
    assert again is not first and len(calls) == 10
    assert isinstance(again.images, np.memmap) and isinstance(again.masks, np.memmap)
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.masks, first.masks)
    assert again.names == NAMES
    folder = Path(again.images.filename).parent
    assert folder.parent == cache_dir() / "tiles"
    assert {p.name for p in folder.iterdir()} == {"images.npy", "masks.npy", "names.json",
                                                  "manifest.json"}
    assert not tmp_leftovers()
    load_tiles(tiny, 8)  # another size is another entry
    assert len(calls) == 20


def test_cache_invalidated_when_a_file_changes(tiny, monkeypatch):
    calls = count_decodes(monkeypatch)
    assert load_tiles(tiny, 16).masks[1].sum() == 0
    path = tiny / "masks" / "100_mask_2.jpg"
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(path, quality=100)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # mtime surely differs
    reloaded = load_tiles(tiny, 16)  # same process, no manual clearing
    assert len(calls) == 20 and reloaded.masks[1].sum() == 256


def test_concurrent_writer_that_wins_the_rename_is_reused(tiny, monkeypatch, own_cache):
    real_rename = os.rename

    def racing_rename(src, dst):
        shutil.copytree(src, dst)  # another process finished first ...
        real_rename(src, dst)  # ... so ours fails: the target folder is not empty

    with monkeypatch.context() as patch:
        patch.setattr(os, "rename", racing_rename)
        tiles = load_tiles(tiny, 16)
    assert tiles.names == NAMES and tiles.masks.shape == (5, 16, 16)
    assert not tmp_leftovers()


def test_progress_lines_for_long_decodes(tiny, monkeypatch, capsys):
    monkeypatch.setattr(tile_files, "_PROGRESS_MIN_TILES", 2)
    load_tiles(tiny, 16)
    err = capsys.readouterr().err
    assert "decoding 5 tiles" in err and "decoded 5/5 tiles" in err
    monkeypatch.setattr(tile_files, "_PROGRESS_MIN_TILES", 500)
    load_tiles(tiny, 8)
    assert capsys.readouterr().err == ""


BAD_IMAGE, BAD_MASK = "images/200_sat_1.jpg", "masks/200_mask_1.jpg"


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("columns", "{csv} must have columns image,mask; found img, msk"),
        ("empty", "{csv} is empty"),
        ("header only", "{csv} lists no tiles"),
        ("no image", "{csv} row 3: image file {root}/images/100_sat_2.jpg does not exist"),
        ("no mask", "{csv} row 3: mask file {root}/masks/100_mask_2.jpg does not exist"),
        ("bad image", f"cannot decode image {{root}}/{BAD_IMAGE}"),
        ("bad mask", f"cannot decode mask {{root}}/{BAD_MASK}"),
    ],
)
def test_bad_data_errors_name_the_culprit(tmp_path, breakage, expected, own_cache):
    root = write_dataset(tmp_path / "d", n=3)
    csv_path = root / "meta_data.csv"
    {
        "columns": lambda: csv_path.write_text("img,msk\n100_sat_1.jpg,100_mask_1.jpg\n"),
        "empty": lambda: csv_path.write_text(""),
        "header only": lambda: csv_path.write_text("image,mask\n"),
        "no image": (root / "images" / "100_sat_2.jpg").unlink,
        "no mask": (root / "masks" / "100_mask_2.jpg").unlink,
        "bad image": lambda: (root / BAD_IMAGE).write_bytes(b"not a jpeg"),
        "bad mask": lambda: (root / BAD_MASK).write_bytes(b"not a jpeg"),
    }[breakage]()
    with pytest.raises(DatasetError) as e:
        load_tiles(root, 16)
    assert expected.format(csv=csv_path, root=root) in str(e.value)
    assert not tmp_leftovers()


def check_partition(train, val, expected_union):
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # sorted, no repeats
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == sorted(expected_union)


def test_random_split_sizes_determinism_and_seed():
    scenes = [str(i // 4) for i in range(50)]
    train, val = split_indices(scenes, "random", 0.2, seed=0)
    check_partition(train, val, range(50))
    assert len(val) == 10
    again = split_indices(scenes, "random", 0.2, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, split_indices(scenes, "random", 0.2, seed=1)[1])
    sizes = [(10, 0.25, 2), (10, 0.01, 1), (10, 0.99, 9), (2, 0.5, 1), (7, 0.5, 4)]
    for n, fraction, n_val in sizes:  # round(), at least one tile on each side
        train, val = split_indices(["s"] * n, "random", fraction)
        check_partition(train, val, range(n))
        assert len(val) == n_val


def test_scene_split_keeps_scenes_whole():
    scenes = [f"s{i % 5}" for i in range(20)]  # 5 scenes of 4 tiles, interleaved
    train, val = split_indices(scenes, "scene", 0.2, seed=3)
    check_partition(train, val, range(20))
    assert len({scenes[i] for i in val}) == 1 and len(val) == 4  # exactly one scene = 20%
    assert not {scenes[i] for i in train} & {scenes[i] for i in val}
    again = split_indices(scenes, "scene", 0.2, seed=3)
    assert np.array_equal(val, again[1])
    picked = {scenes[split_indices(scenes, "scene", 0.2, seed=s)[1][0]] for s in range(20)}
    assert len(picked) > 1  # the seed chooses which scene
    rng = np.random.default_rng(0)
    for trial in range(30):  # random scene sizes: val near the fraction, scenes never split
        counts = rng.integers(1, 15, rng.integers(2, 12))
        scenes = [f"s{k}" for k, c in enumerate(counts) for _ in range(c)]
        fraction = float(rng.uniform(0.05, 0.95))
        train, val = split_indices(scenes, "scene", fraction, seed=trial)
        check_partition(train, val, range(len(scenes)))
        assert len(train) and len(val)
        assert not {scenes[i] for i in train} & {scenes[i] for i in val}
        assert abs(len(val) - fraction * len(scenes)) <= counts.max()


def test_max_tiles_takes_a_seeded_random_subset():
    scenes = [str(i // 10) for i in range(100)]
    train, val = split_indices(scenes, "random", 0.25, seed=0, max_tiles=20)
    union = sorted(train.tolist() + val.tolist())
    check_partition(train, val, union)
    assert len(union) == 20 and len(val) == 5 and max(union) > 20  # not just the first 20
    assert union == sorted(np.concatenate(split_indices(scenes, "random", 0.25, 0, 20)).tolist())
    train, val = split_indices(scenes, "scene", 0.25, seed=0, max_tiles=20)
    assert len(train) + len(val) == 20
    assert not {scenes[i] for i in train} & {scenes[i] for i in val}
    train, val = split_indices(scenes, "random", 0.25, seed=0, max_tiles=500)
    check_partition(train, val, range(100))


def test_split_errors():
    bad = [{"split": "bogus"}, {"val_fraction": 0.0}, {"val_fraction": 1.0}, {"max_tiles": 1}]
    for kwargs in bad:
        with pytest.raises(ConfigError, match=next(iter(kwargs))):  # names the field
            split_indices(["a", "b", "c"], **kwargs)
    with pytest.raises(DatasetError, match="at least 2 tiles"):
        split_indices(["a"])
    with pytest.raises(DatasetError, match="at least 2 scenes.*'only'.*split='random'"):
        split_indices(["only"] * 6, "scene")


def test_real_sample_loads_and_splits_by_scene(real_sample):
    assert find_dataset_root(real_sample.parent) == real_sample
    tiles = load_tiles(real_sample, 64)
    assert tiles.images.shape == (493, 64, 64, 3) and tiles.masks.shape == (493, 64, 64)
    assert set(np.unique(tiles.masks).tolist()) == {0, 1}
    assert 0.3 < float(tiles.masks.mean()) < 0.9
    assert len(set(tiles.scenes)) == 20
    train, val = split_indices(tiles.scenes, "scene", 0.2, seed=0)
    check_partition(train, val, range(493))
    assert not {tiles.scenes[i] for i in train} & {tiles.scenes[i] for i in val}
    assert 0.1 < len(val) / 493 < 0.3
    item = ForestAerialDataset(real_sample, size=64, indices=val)[0]
    assert item["image"].shape == (3, 64, 64) and item["mask"].dtype == torch.int64


def test_select_tiles_is_the_subset_the_split_divides():
    scenes = [f"s{i // 3}" for i in range(30)]
    for split in ("random", "scene"):
        train, val = split_indices(scenes, split, 0.25, seed=5, max_tiles=12)
        assert select_tiles(30, 12, seed=5).tolist() == sorted(np.concatenate([train, val]))
    assert select_tiles(4).tolist() == [0, 1, 2, 3]
    assert select_tiles(4, max_tiles=10).tolist() == [0, 1, 2, 3]  # cap above n: all


def test_resize_pixels_shrinks_with_antialiasing():
    # a 1-px checkerboard averages to mid-grey when shrunk 4x (plain bilinear would alias)
    board = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)
    rgb = np.repeat(board[:, :, None], 3, axis=2)
    small = resize_pixels(rgb, 4)
    assert small.shape == (4, 4, 3) and small.dtype == np.uint8
    assert np.abs(small.astype(int) - 128).max() <= 2
    assert np.array_equal(resize_pixels(rgb, 16), rgb)  # already that size: unchanged


def recode_masks(source: Path, target: Path, fmt: str, scale: int) -> Path:
    """A copy of the dataset at ``source`` whose masks are saved again as ``fmt`` files of
    grey values {0, ``scale``} (the same forest pixels), listed in a new CSV."""
    shutil.copytree(source / "images", target / "images")
    (target / "masks").mkdir()
    rows = []
    with open(source / "meta_data.csv", newline="") as f:
        for image, mask in list(csv.reader(f))[1:]:
            grey = np.asarray(Image.open(source / "masks" / mask).convert("L"))
            name = f"{Path(mask).stem}.{fmt}"
            Image.fromarray(((grey > 127) * scale).astype(np.uint8)).save(target / "masks" / name)
            rows.append([image, name])
    with open(target / "meta_data.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "mask"], *rows])
    return target


def test_zero_one_png_masks_give_the_forest_of_zero_255_jpeg_masks(tmp_path):
    jpeg = synthetic.make_synthetic_dataset(tmp_path / "jpeg", n=6, size=32, seed=4)
    png01 = recode_masks(jpeg, tmp_path / "png01", "png", 1)
    png255 = recode_masks(jpeg, tmp_path / "png255", "png", 255)
    jpeg01 = recode_masks(jpeg, tmp_path / "jpeg01", "jpg", 1)
    roots = (jpeg, png01, png255, jpeg01)
    masks = {root.name: load_tiles(root, 32).masks for root in roots}
    assert 0.2 < masks["jpeg"].mean() < 0.9
    assert masks["png01"].mean() == masks["jpeg"].mean()
    np.testing.assert_array_equal(masks["png01"], masks["png255"])
    np.testing.assert_array_equal(masks["png01"], masks["jpeg"])
    # 0/1 JPEGs (quality 75): compression noise (grey 0..2) flips edge pixels, not the mask
    assert abs(masks["jpeg01"].mean() - masks["jpeg"].mean()) < 0.05
    assert (masks["jpeg01"] == masks["jpeg"]).mean() > 0.8
    manifests = {root.name: json.loads(
        (Path(load_tiles(root, 32).masks.filename).parent / "manifest.json").read_text())
        for root in (jpeg, png01, jpeg01)}
    assert manifests["png01"]["mask_convention"] == "0/1"
    assert manifests["jpeg01"]["mask_convention"] == "0/1"
    assert manifests["jpeg"]["mask_convention"] == "0/255"


def test_masks_without_forest_are_refused_naming_the_numbers(tmp_path, own_cache):
    root = write_dataset(tmp_path / "d", n=2)  # tile 2 has no forest; tile 1 has 128 px
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(root / "masks" / "100_mask_1.jpg",
                                                           quality=100)
    with pytest.raises(DatasetError) as e:
        load_tiles(root, 16)
    message = str(e.value)
    assert str(root) in message and "no forest" in message and "2 tiles" in message
    assert "0..100" in message and "0/255" in message
    assert not tmp_leftovers()


def test_threshold_mask_conventions():
    gray = np.array([0, 1, 2, 127, 128, 255], np.uint8)
    assert data.threshold_mask(gray, "0/1").tolist() == [0, 1, 1, 1, 1, 1]
    assert data.threshold_mask(gray, "0/255").tolist() == [0, 0, 0, 0, 1, 1]
    assert data.mask_convention(1) == "0/1" and data.mask_convention(0) == "0/1"
    assert data.mask_convention(15) == "0/1"  # 0/1 JPEGs: compression noise of a few greys
    assert data.mask_convention(16) == "0/255" and data.mask_convention(255) == "0/255"
    with pytest.raises(ValueError, match="convention"):
        data.threshold_mask(gray, "0/100")


def test_csv_with_a_byte_order_mark_loads(tmp_path):
    root = write_dataset(tmp_path / "d", n=3)
    plain = load_tiles(root, 16)
    bom = write_dataset(tmp_path / "bom", n=3)
    csv_path = bom / "meta_data.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())
    tiles = load_tiles(bom, 16)
    assert tiles.names == NAMES[:3]
    np.testing.assert_array_equal(tiles.masks, plain.masks)


def test_duplicate_csv_rows_are_refused_naming_the_file_and_rows(tmp_path):
    rows = [["100_sat_1.jpg", "100_mask_1.jpg"], ["100_sat_2.jpg", "100_mask_2.jpg"],
            ["images/100_sat_1.jpg", "100_mask_1.jpg"]]  # the same file, spelled otherwise
    root = write_dataset(tmp_path / "d", n=2, csv_rows=rows)
    with pytest.raises(DatasetError) as e:
        load_tiles(root, 16)
    message = str(e.value)
    assert str(root / "meta_data.csv") in message
    assert "100_sat_1.jpg is listed on rows 2, 4" in message
