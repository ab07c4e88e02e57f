"""A trial's data: held-out validation data (``val_data``) instead of a split; sparse point
labels and the dense label maps of its batches."""

import numpy as np
import pytest
import torch

from forest_seg.batches import VAL_POINTS_SEED_OFFSET, prepare_trial_data
from forest_seg.config import TrainConfig
from forest_seg.data import load_tiles, split_indices
from forest_seg.errors import ConfigError, DatasetError
from forest_seg.points import IGNORE_INDEX, sample_points_batch
from forest_seg.synthetic import make_synthetic_dataset

CPU = torch.device("cpu")


@pytest.fixture
def two_roots(tmp_path):
    """(train root with 6 tiles, validation root with 4 tiles), 32 px, different seeds."""
    return (make_synthetic_dataset(tmp_path / "train", n=6, size=32, seed=1),
            make_synthetic_dataset(tmp_path / "held-out", n=4, size=32, seed=2))


def config(train, val, **changes):
    return TrainConfig(**{"data": str(train), "val_data": str(val), "image_size": 32,
                          "points": 5, "batch_size": 2, "pretrained": "none", "device": "cpu",
                          **changes})


def test_all_of_data_trains_and_all_of_val_data_validates(two_roots):
    train_root, val_root = two_roots
    # split and val_fraction are ignored: "scene" at 0.5 would move tiles to validation
    data = prepare_trial_data(config(train_root, val_root, split="scene", val_fraction=0.5))
    train_tiles, val_tiles = load_tiles(train_root, 32), load_tiles(val_root, 32)
    assert data.train.tiles.tolist() == [0, 1, 2, 3, 4, 5]
    assert data.val.tiles.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(data.train.images[data.train.tiles], train_tiles.images)
    np.testing.assert_array_equal(data.val.images[data.val.tiles], val_tiles.images)
    np.testing.assert_array_equal(data.val.masks[data.val.tiles], val_tiles.masks)
    assert not np.array_equal(train_tiles.images[:4], val_tiles.images)  # really other tiles
    # validation points label val_data's own masks: 5 per tile, each equal to the mask there
    labels = data.val.dense_labels().numpy()
    labelled = labels != IGNORE_INDEX
    assert labelled.sum(axis=(1, 2)).tolist() == [5, 5, 5, 5]
    np.testing.assert_array_equal(labels[labelled], val_tiles.masks[labelled])


def test_max_tiles_caps_the_training_tiles_only(two_roots):
    train_root, val_root = two_roots
    data = prepare_trial_data(config(train_root, val_root, max_tiles=3, seed=7))
    # the same seeded subset the split would have divided
    subset = np.sort(np.concatenate(
        split_indices(load_tiles(train_root, 32).scenes, max_tiles=3, seed=7)))
    assert len(data.train.tiles) == 3 and data.train.tiles.tolist() == subset.tolist()
    assert data.val.tiles.tolist() == [0, 1, 2, 3]


def test_a_training_cap_keeps_nested_tiles_and_the_same_validation(two_roots):
    train_root, val_root = two_roots
    full = prepare_trial_data(config(train_root, val_root, seed=3))
    small = prepare_trial_data(config(train_root, val_root, seed=3, max_train_tiles=2))
    large = prepare_trial_data(config(train_root, val_root, seed=3, max_train_tiles=4, points=0))
    assert len(small.train) == 2 and len(large.train) == 4
    # a smaller budget's tiles are among a larger one's, whatever the labelling
    assert set(small.train.tiles) < set(large.train.tiles) < set(full.train.tiles)
    assert small.val.tiles.tolist() == large.val.tiles.tolist() == full.val.tiles.tolist()
    # the capped tiles keep the points they have uncapped (points depend on seed and tile)
    capped = small.train.dense_labels().numpy()
    uncapped = full.train.dense_labels().numpy()[np.searchsorted(full.train.tiles,
                                                                 small.train.tiles)]
    np.testing.assert_array_equal(capped, uncapped)
    other_seed = prepare_trial_data(config(train_root, val_root, seed=4, max_train_tiles=4))
    assert len(other_seed.train) == 4  # the order is drawn per seed


def test_a_cap_below_a_batch_names_the_budget(two_roots):
    train_root, val_root = two_roots
    with pytest.raises(DatasetError, match="max_train_tiles=1 \\(a larger budget\\)"):
        prepare_trial_data(config(train_root, val_root, max_train_tiles=1))


def test_missing_val_data_names_the_field_and_path(two_roots, tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DatasetError) as err:
        prepare_trial_data(config(two_roots[0], missing))
    message = str(err.value)
    assert message.startswith("val_data: ") and str(missing) in message
    assert "does not exist" in message


def test_val_data_cli_flag_reports_a_missing_folder_in_one_line(two_roots, tmp_path, capsys):
    from forest_seg.cli import run_cli
    from forest_seg.train import main

    missing = tmp_path / "gone"
    argv = ["--data", str(two_roots[0]), "--val-data", str(missing), "--image-size", "32",
            "--epochs", "1", "--pretrained", "none", "--device", "cpu",
            "--out", str(tmp_path / "out")]
    assert run_cli(lambda: main(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: val_data: ") and str(missing) in err[0]


def test_training_on_a_single_tile_is_refused(tmp_path, two_roots):
    one = make_synthetic_dataset(tmp_path / "one", n=1, size=32, seed=3)
    with pytest.raises(DatasetError, match="training split has 1 tile, fewer than batch_size=2"):
        prepare_trial_data(config(one, two_roots[1]))


@pytest.fixture(scope="module")
def ten_tiles(tmp_path_factory):
    """10 synthetic tiles of 64 px."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("ten"), n=10, size=64, seed=4)


def trial(root, **changes):
    return prepare_trial_data(TrainConfig(data=str(root), image_size=64, split="random",
                                          pretrained="none", device="cpu",
                                          **{"batch_size": 2, **changes}))


@pytest.mark.parametrize(("strategy", "seed"), [("balanced", 0), ("uniform", 3), ("forest", 5),
                                                ("spread", 1), ("boundary", 2)])
def test_batch_labels_are_the_points_of_sample_points_batch(ten_tiles, strategy, seed):
    """Scattered per batch from the sparse points: the dense maps sample_points_batch gives
    for the same seed, tile for tile, in the batch's (shuffled) order."""
    data = trial(ten_tiles, points=9, point_strategy=strategy, seed=seed)
    masks = load_tiles(ten_tiles, 64).masks
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    for side, points_seed, positions in ((data.train, seed, order),
                                         (data.val, seed + VAL_POINTS_SEED_OFFSET, None)):
        expected = sample_points_batch(masks[side.tiles], 9, strategy, seed=points_seed,
                                       tile_ids=side.tiles)
        batches = list(side.batches(3, CPU, positions))
        labels = torch.cat([b.labels for b in batches])
        assert labels.dtype == torch.int64 and len(batches) == -(-len(side) // 3)
        rows = torch.arange(len(side)) if positions is None else positions
        assert torch.equal(labels, expected[rows].long())
        assert torch.equal(torch.cat([b.mask for b in batches]),
                           torch.from_numpy(masks[side.tiles][rows.numpy()]).long())
        assert torch.equal(side.dense_labels(), expected)


def test_fifty_points_at_64_px_take_258_bytes_per_tile(ten_tiles):
    data = trial(ten_tiles, points=50)  # balanced: exactly 50 points on every tile
    assert len(data.train) + len(data.val) == 10
    for side in (data.train, data.val):
        # per point an int32 pixel index and a uint8 label; per tile an int64 offset (+ one)
        assert side.labels.nbytes == len(side) * (50 * 5 + 8) + 8
        assert side.labels.nbytes / len(side) < 1024  # a dense uint8 map: 64 * 64 = 4096


@pytest.mark.parametrize("points", [9, 0])
def test_labelled_pixels_are_those_of_the_dense_labels(ten_tiles, points):
    """The colours and labels of the labelled pixels, read from the sparse points (or the
    masks), are the non-255 pixels of the dense label maps, in tile-major raster order."""
    side = trial(ten_tiles, points=points).train
    colours, values = side.labelled_pixels()
    dense = side.dense_labels().numpy()
    keep = dense != IGNORE_INDEX
    assert np.array_equal(colours, side.images[side.tiles][keep])
    assert np.array_equal(values, dense[keep])
    assert len(values) == (len(side) * 9 if points else dense.size)


def test_dense_supervision_keeps_no_labels_of_its_own(ten_tiles):
    """points=0: the masks are the labels, used as they are (no copy of them per trial)."""
    data = trial(ten_tiles, points=0)
    assert data.train.labels is None and data.val.labels is None
    batch = next(data.train.batches(4, CPU))
    assert batch.labels is batch.mask and batch.labels.dtype == torch.int64
    masks = load_tiles(ten_tiles, 64).masks
    assert torch.equal(batch.mask, torch.from_numpy(masks[data.train.tiles[:4]]).long())
    assert torch.equal(data.train.dense_labels(), torch.from_numpy(masks[data.train.tiles]))


@pytest.mark.parametrize(("changes", "n_train", "fixes"), [
    ({"max_tiles": 2, "split": "random"}, 1,
     "lower --val-fraction or --batch-size, or raise --max-tiles"),
    ({"val_fraction": 0.99, "split": "random"}, 1, "lower --val-fraction or --batch-size"),
    ({"batch_size": 8, "split": "random"}, 5, "lower --val-fraction or --batch-size"),
])
def test_a_training_split_smaller_than_a_batch_is_refused(two_roots, changes, n_train, fixes):
    cfg = TrainConfig(data=str(two_roots[0]), image_size=32, points=5, pretrained="none",
                      device="cpu", **{"batch_size": 2, **changes})
    tiles = "1 tile" if n_train == 1 else f"{n_train} tiles"
    with pytest.raises(DatasetError) as err:
        prepare_trial_data(cfg)
    message = str(err.value)
    assert f"training split has {tiles}, fewer than batch_size={cfg.batch_size}: {fixes}" in (
        message)
    assert str(two_roots[0]) in message
    if n_train >= 2:  # a batch that small is fine
        assert len(prepare_trial_data(cfg.replace(batch_size=n_train)).train) == n_train


def test_scene_split_leaving_one_training_tile_is_refused(tmp_path):
    root = make_synthetic_dataset(tmp_path / "d", n=4, size=32, seed=5)
    scenes = load_tiles(root, 32).scenes  # 2 scenes: one goes to validation
    cfg = TrainConfig(data=str(root), image_size=32, points=5, pretrained="none", device="cpu",
                      batch_size=4, split="scene", val_fraction=0.5)
    n_train = len(prepare_trial_data(cfg.replace(batch_size=2)).train)
    assert len(set(scenes)) == 2 and n_train < 4
    with pytest.raises(DatasetError, match=f"training split has {n_train} tiles?, fewer than "
                                           "batch_size=4"):
        prepare_trial_data(cfg)


def test_more_points_than_pixels_is_refused(two_roots):
    with pytest.raises(ConfigError) as err:
        prepare_trial_data(config(*two_roots, points=5000))
    message = str(err.value)
    assert "points=5000" in message and "1024 pixels" in message and "image_size=32" in message
    assert len(prepare_trial_data(config(*two_roots, points=1024)).train) == 6  # every pixel


def test_points_are_drawn_for_the_trials_tiles_only_and_equal_those_of_every_tile(ten_tiles):
    """A trial capped at 4 of 10 tiles draws points for its own tiles only, and they are the
    points the same seed gives those tiles when every tile of the dataset is sampled."""
    masks = load_tiles(ten_tiles, 64).masks
    train = trial(ten_tiles, points=9, seed=4, max_tiles=4, val_fraction=0.5).train
    assert len(train) < len(masks) and len(train.labels) == len(train)
    every_tile = sample_points_batch(masks, 9, "balanced", seed=4)
    assert torch.equal(train.dense_labels(), every_tile[train.tiles])
