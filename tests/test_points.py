"""Point-annotation simulation: counts, classes, reproducibility, batch labelling."""

import time

import numpy as np
import pytest
import torch

from forest_seg.errors import ConfigError
from forest_seg.points import (
    IGNORE_INDEX,
    POINT_STRATEGIES,
    sample_points,
    sample_points_batch,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def labelled(points: torch.Tensor) -> torch.Tensor:
    return points != IGNORE_INDEX


def class_counts(points: torch.Tensor) -> tuple[int, int]:
    """(forest, non-forest) labelled pixel counts."""
    return int((points == 1).sum()), int((points == 0).sum())


# 4x4 hand mask: 8 forest pixels (left half), 8 non-forest
HALF_MASK = torch.tensor([[1, 1, 0, 0]] * 4)
# 8x8 mask with 20 forest pixels (first 20 in raster order)
MASK_20 = (torch.arange(64) < 20).long().reshape(8, 8)


def test_strategy_names_and_ignore_index():
    assert POINT_STRATEGIES == ("balanced", "uniform", "forest")
    assert IGNORE_INDEX == 255


@pytest.mark.parametrize(
    ("strategy", "n", "expected"),
    [
        ("balanced", 0, 0),
        ("balanced", 7, 7),
        ("balanced", 64, 64),
        ("balanced", 1000, 64),
        ("uniform", 0, 0),
        ("uniform", 7, 7),
        ("uniform", 50, 50),
        ("uniform", 1000, 64),
        ("forest", 0, 0),
        ("forest", 7, 7),
        ("forest", 20, 20),
        ("forest", 50, 20),  # only 20 forest pixels exist
    ],
)
def test_exact_count_and_values(strategy, n, expected):
    points = sample_points(MASK_20, n, strategy, generator=gen(0))
    assert points.dtype == torch.int64 and points.shape == (8, 8)
    sel = labelled(points)
    assert int(sel.sum()) == expected
    assert torch.equal(points[sel], MASK_20[sel])
    assert set(points.unique().tolist()) <= {0, 1, IGNORE_INDEX}
    if strategy == "forest":
        assert (points[sel] == 1).all()


def test_forest_strategy_on_tile_without_forest_labels_nothing():
    points = sample_points(torch.zeros(8, 8, dtype=torch.int64), 10, "forest", generator=gen(0))
    assert not labelled(points).any()


def test_balanced_half_per_class_on_hand_mask():
    assert class_counts(sample_points(HALF_MASK, 6, "balanced", generator=gen(1))) == (3, 3)
    # odd count: n // 2 = 2 forest, the odd point goes to non-forest
    assert class_counts(sample_points(HALF_MASK, 5, "balanced", generator=gen(1))) == (2, 3)
    assert class_counts(sample_points(HALF_MASK, 16, "balanced", generator=gen(1))) == (8, 8)


def test_balanced_tops_up_short_class():
    two_forest = torch.zeros(4, 4, dtype=torch.int64)
    two_forest[0, 0] = two_forest[3, 3] = 1
    points = sample_points(two_forest, 6, "balanced", generator=gen(0))
    assert class_counts(points) == (2, 4)
    assert points[0, 0] == 1 and points[3, 3] == 1
    # and the other way round: 2 non-forest pixels -> 4 forest + 2 non-forest
    assert class_counts(sample_points(1 - two_forest, 6, "balanced", generator=gen(0))) == (4, 2)
    # a single-class tile still gets all its points from that class
    assert class_counts(sample_points(torch.ones(4, 4, dtype=torch.int64), 5, "balanced")) == (5, 0)


def test_uniform_draws_both_classes_in_proportion():
    mask = torch.zeros(32, 32, dtype=torch.int64)
    mask[:, :8] = 1  # 25 % forest
    forest = [
        class_counts(sample_points(mask, 100, "uniform", generator=gen(s)))[0] for s in range(20)
    ]
    share = sum(forest) / 2000
    assert 0.2 < share < 0.3
    assert 0 < min(forest) and max(forest) < 100  # never one class only


@pytest.mark.parametrize(
    ("strategy", "n", "pool"),
    [
        ("forest", 4, 64),  # few points in a large class: the rejection-sampling path
        ("forest", 30, 64),  # a large share of the class: the enumeration path
        ("uniform", 4, 128),
    ],
)
def test_every_eligible_pixel_is_drawn_about_equally_often(strategy, n, pool):
    mask = torch.zeros(16, 8, dtype=torch.int64)
    mask[:8] = 1  # 64 forest pixels in the top half
    draws = 3200 // n
    hits = torch.zeros(16, 8)
    for seed in range(draws):
        hits += labelled(sample_points(mask, n, strategy, generator=gen(seed))).float()
    if strategy == "forest":
        assert hits[8:].sum() == 0
        hits = hits[:8]
    expected = draws * n / pool
    chi2 = float(((hits - expected) ** 2 / expected).sum())
    # chi-square with pool - 1 degrees of freedom: mean ~pool, far above that means bias
    assert chi2 < 2 * pool, (chi2, hits)


@pytest.mark.parametrize("strategy", POINT_STRATEGIES)
def test_same_seed_same_points_other_seed_other_points(strategy):
    mask = (torch.rand(32, 32, generator=gen(5)) < 0.5).long()
    first = sample_points(mask, 50, strategy, generator=gen(3))
    assert torch.equal(first, sample_points(mask, 50, strategy, generator=gen(3)))
    assert not torch.equal(first, sample_points(mask, 50, strategy, generator=gen(4)))


def test_accepts_uint8_and_bool_masks():
    points = sample_points(HALF_MASK.to(torch.uint8), 6, generator=gen(0))
    assert points.dtype == torch.int64 and class_counts(points) == (3, 3)
    assert class_counts(sample_points(HALF_MASK.bool(), 6, generator=gen(0))) == (3, 3)


@pytest.mark.parametrize("bad", [-1, 2.5, "10"])
def test_bad_point_count_raises_config_error_naming_it(bad):
    with pytest.raises(ConfigError, match=rf"points.*{bad!r}"):
        sample_points(HALF_MASK, bad)
    with pytest.raises(ConfigError, match=rf"points.*{bad!r}"):
        sample_points_batch(HALF_MASK[None], bad)


def test_unknown_strategy_raises_config_error_listing_choices():
    with pytest.raises(ConfigError, match=r"'grid'.*balanced, uniform, forest"):
        sample_points(HALF_MASK, 5, "grid")
    with pytest.raises(ConfigError, match=r"'grid'.*balanced, uniform, forest"):
        sample_points_batch(HALF_MASK[None], 5, "grid")


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.zeros(2, 4, 4, dtype=torch.int64), r"\[H, W\].*\(2, 4, 4\)"),
        (torch.full((4, 4), 2), r"mask.*\{0, 1\}.*\[2, 2\]"),
        (torch.full((4, 4), IGNORE_INDEX), r"\{0, 1\}.*255"),
        (torch.zeros(4, 4), r"integer.*float32"),
    ],
)
def test_bad_mask_raises(mask, message):
    with pytest.raises(ValueError, match=message):
        sample_points(mask, 3)


# --- batch ---------------------------------------------------------------------------------


def random_masks(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = gen(seed)
    return (torch.rand(n, size, size, generator=g) < torch.rand(n, 1, 1, generator=g)).to(
        torch.uint8
    )


@pytest.mark.parametrize("strategy", POINT_STRATEGIES)
def test_batch_dtype_counts_and_values(strategy):
    masks = random_masks(6)
    masks[0] = 0  # a tile without forest
    points = sample_points_batch(masks, 10, strategy, seed=1)
    assert points.dtype == torch.uint8 and points.shape == masks.shape
    sel = labelled(points)
    assert torch.equal(points[sel], masks[sel])
    counts = sel.sum(dim=(1, 2)).tolist()
    forest = masks.sum(dim=(1, 2)).tolist()
    expected = [min(10, f) if strategy == "forest" else 10 for f in forest]
    assert counts == expected


def test_batch_accepts_numpy_and_is_reproducible():
    masks = random_masks(4)
    points = sample_points_batch(masks.numpy(), 8, seed=3)
    assert torch.equal(points, sample_points_batch(masks, 8, seed=3))
    assert not torch.equal(points, sample_points_batch(masks, 8, seed=4))


def test_batch_tile_points_do_not_depend_on_other_tiles():
    masks = random_masks(3, seed=0)
    others = random_masks(3, seed=9)
    mixed = torch.stack([others[0], masks[1], others[2]])
    assert torch.equal(
        sample_points_batch(masks, 12, seed=2)[1], sample_points_batch(mixed, 12, seed=2)[1]
    )
    # with explicit tile ids a tile keeps its points wherever it sits in the set
    alone = sample_points_batch(masks[1:2], 12, seed=2, tile_ids=[1])
    assert torch.equal(alone[0], sample_points_batch(masks, 12, seed=2)[1])
    moved = sample_points_batch(masks.flip(0), 12, seed=2, tile_ids=[2, 1, 0])
    assert torch.equal(moved.flip(0), sample_points_batch(masks, 12, seed=2))


def test_batch_identical_masks_get_different_points():
    masks = random_masks(1).expand(2, -1, -1)
    points = sample_points_batch(masks, 12, "uniform", seed=0)
    assert not torch.equal(points[0], points[1])


def test_batch_zero_points_means_dense_masks():
    masks = random_masks(3).long()
    dense = sample_points_batch(masks, 0, seed=0)
    assert dense.dtype == torch.uint8
    assert torch.equal(dense, masks.to(torch.uint8))
    dense[0] = IGNORE_INDEX  # a copy: the caller's masks are untouched
    assert masks.max() == 1


def test_batch_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[N, H, W\].*\(4, 4\)"):
        sample_points_batch(HALF_MASK, 3)
    with pytest.raises(ValueError, match=r"tile_ids.*2 ids.*got 3"):
        sample_points_batch(random_masks(2), 3, tile_ids=[0, 1, 2])
    with pytest.raises(ValueError, match=r"masks.*\{0, 1\}.*\[3, 3\]"):
        sample_points_batch(np.full((2, 4, 4), 3, dtype=np.uint8), 3)


def test_batch_cost_does_not_scale_with_tile_area_times_points():
    masks = random_masks(300, size=256)
    start = time.perf_counter()
    points = sample_points_batch(masks, 200, "balanced", seed=0)
    elapsed = time.perf_counter() - start
    assert int(labelled(points).sum()) == 300 * 200
    # ~0.1 s on a laptop core; the bound leaves room for a loaded CI machine
    assert elapsed < 5.0, elapsed
