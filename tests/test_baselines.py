"""Baselines: the colour lookup table and the all-forest predictor, against hand-computed
tables and scores."""

import numpy as np
import pytest

from forest_seg.baselines import (
    BASELINE_KEYS,
    FINE_BINS,
    baseline_scores,
    colour_bins,
    fit_colour_table,
    predict_colour,
)
from forest_seg.points import IGNORE_INDEX

RED, NEAR_RED, BLUE, GREEN = (200, 0, 0), (210, 0, 0), (0, 0, 200), (0, 200, 0)


def tile(colours: list[tuple[int, int, int]]) -> np.ndarray:
    """uint8 [1,1,len,3]: one tile of one row of the given colours."""
    return np.array([[colours]], dtype=np.uint8)


def labelled(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [P,3] colours, [P] labels) of the pixels not ``IGNORE_INDEX``."""
    keep = labels != IGNORE_INDEX
    return images[keep], labels[keep]


def test_colour_bins_quantise_each_channel():
    pixels = np.array([[0, 0, 0], [255, 255, 255], [16, 32, 255]], dtype=np.uint8)
    # 16 levels per channel: (16, 32, 255) -> levels (1, 2, 15) -> (1*16 + 2)*16 + 15
    assert colour_bins(pixels, 16).tolist() == [0, 4095, 303]
    assert colour_bins(pixels, 2).tolist() == [0, 7, 1]


def test_table_takes_each_bins_majority_and_falls_back_to_coarser_bins():
    images = tile([RED, RED, RED, BLUE, BLUE, GREEN])
    labels = np.array([[[1, 1, 0, 0, 0, IGNORE_INDEX]]], dtype=np.uint8)
    table = fit_colour_table(*labelled(images, labels))
    assert table.shape == (FINE_BINS**3,)
    # red: 2 forest votes against 1; blue: 2 non-forest; green was never labelled, and no
    # labelled colour shares even its 2-level bin, so it takes the overall majority: 2 of 5
    # labelled pixels are forest -> non-forest.
    # NEAR_RED is in another 16-level bin than RED (210 // 16 = 13, 200 // 16 = 12) but in the
    # same 8-level bin (both // 32 = 6): it inherits red's forest.
    predicted = predict_colour(table, tile([RED, BLUE, GREEN, NEAR_RED]))
    assert predicted.tolist() == [[[1, 0, 0, 1]]]


def test_ties_go_to_forest_and_an_unlabelled_set_is_refused():
    table = fit_colour_table(*labelled(tile([RED, RED]), np.array([[[1, 0]]], dtype=np.uint8)))
    assert predict_colour(table, tile([RED, GREEN])).tolist() == [[[1, 1]]]
    with pytest.raises(ValueError, match="no labelled pixel"):
        fit_colour_table(*labelled(tile([RED]), np.full((1, 1, 1), IGNORE_INDEX, dtype=np.uint8)))


def test_baseline_scores_by_hand():
    train = tile([RED, BLUE])
    train_labels = np.array([[[1, 0]]], dtype=np.uint8)
    # validation: 4 pixels, 3 forest. Colour table: red->forest, blue->non-forest.
    val = tile([RED, RED, BLUE, BLUE])
    val_masks = np.array([[[1, 1, 1, 0]]], dtype=np.uint8)
    scores = baseline_scores(*labelled(train, train_labels), val, val_masks)
    assert set(scores) == set(BASELINE_KEYS)
    # all forest: forest IoU 3/4, non-forest IoU 0 -> mIoU 3/8
    assert scores["baseline_all_forest_miou"] == pytest.approx(0.375)
    # colour: predicts [1,1,0,0]; forest IoU 2/3 (TP 2, FN 1), non-forest IoU 1/2 (TP 1, FP 1)
    assert scores["baseline_colour_iou"] == pytest.approx(2 / 3)
    assert scores["baseline_colour_miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
