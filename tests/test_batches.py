"""A trial's data: held-out validation data (``val_data``) instead of a split."""

import numpy as np
import pytest

from forest_seg.batches import prepare_trial_data
from forest_seg.config import TrainConfig
from forest_seg.data import load_tiles, split_indices
from forest_seg.errors import DatasetError
from forest_seg.points import IGNORE_INDEX
from forest_seg.synthetic import make_synthetic_dataset


@pytest.fixture
def two_roots(tmp_path):
    """(train root with 6 tiles, validation root with 4 tiles), 32 px, different seeds."""
    return (make_synthetic_dataset(tmp_path / "train", n=6, size=32, seed=1),
            make_synthetic_dataset(tmp_path / "held-out", n=4, size=32, seed=2))


def config(train, val, **changes):
    return TrainConfig(data=str(train), val_data=str(val), image_size=32, points=5,
                       pretrained="none", device="cpu", **changes)


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
    with pytest.raises(DatasetError, match="at least 2 tiles"):
        prepare_trial_data(config(one, two_roots[1]))
