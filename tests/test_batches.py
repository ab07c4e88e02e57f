"""A trial's data: held-out validation data (``val_data``) instead of a split."""

import numpy as np
import pytest

from forest_seg.batches import prepare_trial_data
from forest_seg.config import TrainConfig
from forest_seg.data import load_tiles, split_indices
from forest_seg.errors import ConfigError, DatasetError
from forest_seg.points import IGNORE_INDEX
from forest_seg.synthetic import make_synthetic_dataset


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
    labels = data.val.labels.numpy()
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
