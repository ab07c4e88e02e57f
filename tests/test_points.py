"""Point-annotation simulation: counts, classes, spacing, edges, reproducibility, batches."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from forest_seg import points_spatial
from forest_seg.errors import ConfigError
from forest_seg.points import (
    BOUNDARY_SHARE,
    BOUNDARY_WIDTH,
    IGNORE_INDEX,
    POINT_STRATEGIES,
    SparsePoints,
    _tile_seed,
    sample_points,
    sample_points_batch,
    sample_points_sparse,
    scatter_points,
)
from forest_seg.points_spatial import edge_band, grid_shape


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
    from forest_seg import points, strategy_registry

    assert POINT_STRATEGIES[:5] == ("balanced", "uniform", "forest", "spread", "boundary")
    # the torch-free registry names the built-ins points.py implements, in their order
    assert tuple(points._STRATEGIES) == strategy_registry.BUILTIN_STRATEGIES
    assert IGNORE_INDEX == 255
    assert (BOUNDARY_SHARE, BOUNDARY_WIDTH) == (0.5, 3)


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
        ("spread", 0, 0),
        ("spread", 7, 7),
        ("spread", 63, 63),
        ("spread", 64, 64),
        ("spread", 1000, 64),
        ("boundary", 0, 0),
        ("boundary", 7, 7),
        ("boundary", 63, 63),
        ("boundary", 64, 64),
        ("boundary", 1000, 64),
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
        ("spread", 4, 128),  # 2x2 cells of 8x4 pixels, one point in each, uniform inside
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


# --- spread ----------------------------------------------------------------------------------


def test_cell_sums_and_edges_cover_the_tile():
    mask = (torch.rand(13, 11, generator=gen(2)) < 0.5).long()
    rows, cols = points_spatial.grid_edges(13, 3, "cpu"), points_spatial.grid_edges(11, 4, "cpu")
    assert rows.tolist() == [0, 4, 8, 13] and cols.tolist() == [0, 2, 5, 8, 11]
    sums = points_spatial.cell_sums(mask, rows, cols)
    for i in range(3):
        for j in range(4):
            cell = mask[rows[i] : rows[i + 1], cols[j] : cols[j + 1]]
            assert sums[i, j] == cell.sum()


def points_per_cell(points: torch.Tensor, cell_h: int, cell_w: int) -> torch.Tensor:
    """Labelled pixels per cell of a regular grid of ``cell_h`` x ``cell_w`` cells."""
    h, w = points.shape
    sel = labelled(points).reshape(h // cell_h, cell_h, w // cell_w, cell_w)
    return sel.sum(dim=(1, 3))


@pytest.mark.parametrize(
    ("k", "height", "width", "grid"),
    [(4, 16, 16, (2, 2)), (16, 16, 16, (4, 4)), (3, 16, 16, (2, 2)), (6, 12, 8, (3, 2)),
     (50, 256, 256, (7, 8)), (200, 256, 256, (14, 15)), (64, 8, 8, (8, 8)), (5, 1, 9, (1, 5))],
)  # fmt: skip
def test_spread_grid_is_near_square_and_has_room_for_every_point(k, height, width, grid):
    assert grid_shape(k, height, width) == grid
    for m in range(1, height * width + 1, max(1, height * width // 97)):
        rows, cols = grid_shape(m, height, width)
        assert rows <= height and cols <= width
        assert 0 <= rows * cols - m < cols  # room for all, fewer than a row of spare cells


@pytest.mark.parametrize(
    ("shape", "n", "cell"),
    [
        ((16, 16), 4, (8, 8)),  # 2x2 grid: one point per quadrant
        ((16, 16), 16, (4, 4)),  # 4x4 grid
        ((12, 8), 6, (4, 4)),  # 3 rows x 2 cols on a tall tile
    ],
)
def test_spread_puts_one_point_in_every_cell_when_n_fills_the_grid(shape, n, cell):
    mask = (torch.rand(shape, generator=gen(7)) < 0.5).long()
    for seed in range(20):
        per_cell = points_per_cell(sample_points(mask, n, "spread", generator=gen(seed)), *cell)
        assert (per_cell == 1).all(), per_cell


def test_spread_leaves_spare_cells_empty_never_doubled():
    # n = 3 on 16x16: a 2x2 grid, so three quadrants get one point and one gets none
    mask = torch.zeros(16, 16, dtype=torch.int64)
    empty = set()
    for seed in range(40):
        per_cell = points_per_cell(sample_points(mask, 3, "spread", generator=gen(seed)), 8, 8)
        assert sorted(per_cell.flatten().tolist()) == [0, 1, 1, 1]
        empty.add(int(per_cell.flatten().argmin()))
    assert empty == {0, 1, 2, 3}  # the empty quadrant is random


def min_distance(points: torch.Tensor) -> float:
    xy = labelled(points).nonzero().double()
    return float((torch.cdist(xy, xy) + 1e9 * torch.eye(len(xy))).min())


def test_spread_points_are_rarely_close_unlike_uniform_ones():
    mask = torch.zeros(16, 16, dtype=torch.int64)
    mask[:, :4] = 1

    def close_share(strategy: str) -> float:
        draws = [sample_points(mask, 4, strategy, generator=gen(s)) for s in range(200)]
        return sum(min_distance(p) < 4 for p in draws) / len(draws)

    # 4 points on 16x16: a uniform draw has two within distance 4 about 60 % of the time,
    # one point per quadrant only when two neighbours sit by their shared border (~10 %)
    assert close_share("uniform") > 0.45
    assert close_share("spread") < 0.25


def test_spread_balances_classes_through_mixed_cells():
    checker = (torch.arange(16)[:, None] + torch.arange(16)) % 2  # every cell holds both classes
    for seed in range(10):
        assert class_counts(sample_points(checker, 9, "spread", generator=gen(seed))) == (4, 5)
        assert class_counts(sample_points(checker, 16, "spread", generator=gen(seed))) == (8, 8)
    # forest in columns 0-3 only (25 %): both left quadrants are mixed and give forest
    left = torch.zeros(16, 16, dtype=torch.int64)
    left[:, :4] = 1
    for seed in range(10):
        points = sample_points(left, 4, "spread", generator=gen(seed))
        assert class_counts(points) == (2, 2)
        assert (points[:, 8:] != 1).all()
    # ...but with a 4x4 grid the forest fills just the first cell column, pure forest: the
    # cells allow 4 forest points, not 8
    assert class_counts(sample_points(left, 16, "spread", generator=gen(0))) == (4, 12)


@pytest.mark.parametrize("rejection_rounds", [None, 0])
def test_spread_finds_a_scarce_class_in_its_cell_uniformly(rejection_rounds, monkeypatch):
    # the top-left quadrant holds just 2 forest pixels out of 64, the only forest of the tile;
    # it must give the forest point, each of the two about equally often. The default first
    # tries a few random candidates per cell; 0 rounds goes straight to enumerating the cell.
    if rejection_rounds is not None:
        monkeypatch.setattr(points_spatial, "_PICK_ROUNDS", rejection_rounds)
    mask = torch.zeros(16, 16, dtype=torch.int64)
    mask[2, 2] = mask[5, 3] = 1
    hits = {(2, 2): 0, (5, 3): 0}
    for seed in range(200):
        points = sample_points(mask, 4, "spread", generator=gen(seed))
        assert class_counts(points) == (1, 3)
        hits[tuple((points == 1).nonzero()[0].tolist())] += 1
    assert 70 < hits[(2, 2)] < 130, hits


@pytest.mark.parametrize("value", [0, 1])
@pytest.mark.parametrize("strategy", ["spread", "boundary"])
def test_single_class_tiles_get_all_points(strategy, value):
    mask = torch.full((16, 16), value)
    for n, expected in [(0, 0), (10, 10), (300, 256)]:
        points = sample_points(mask, n, strategy, generator=gen(0))
        assert int(labelled(points).sum()) == expected
        assert (points[labelled(points)] == value).all()


# --- boundary --------------------------------------------------------------------------------

# forest in columns 0-7, non-forest in 8-15: the edge band is columns 5-7 (forest) and 8-10
EDGE_MASK = torch.zeros(16, 16, dtype=torch.int64)
EDGE_MASK[:, :8] = 1


@pytest.mark.parametrize(("n", "band_forest", "band_other"), [(10, 2, 3), (7, 2, 2), (4, 1, 1)])
def test_boundary_puts_its_share_near_the_edge_and_stays_balanced(n, band_forest, band_other):
    assert BOUNDARY_WIDTH == 3  # the band below is columns 8 - 3 .. 7 + 3
    k_band = band_forest + band_other  # ceil(BOUNDARY_SHARE * n)
    off_band = 0
    for seed in range(50):
        points = sample_points(EDGE_MASK, n, "boundary", generator=gen(seed))
        band = points[:, 5:11]
        assert int(labelled(band).sum()) >= k_band >= BOUNDARY_SHARE * n
        assert int((band == 1).sum()) >= band_forest and int((band == 0).sum()) >= band_other
        assert class_counts(points) == (n // 2, n - n // 2)  # the rest tops up to balanced
        off_band += int(labelled(points).sum() - labelled(band).sum())
    # the rest is drawn over the whole tile: off the band (10 of 16 columns) most of the time
    expected_off = 50 * (n - k_band) * 10 / 16
    assert 0.6 * expected_off < off_band <= 50 * (n - k_band)


def test_boundary_band_is_a_chebyshev_square_around_a_lone_pixel():
    # one non-forest pixel at (8, 8) in a forest tile: the band is the 7x7 square around it
    mask = torch.ones(16, 16, dtype=torch.int64)
    mask[8, 8] = 0
    for seed in range(20):
        points = sample_points(mask, 10, "boundary", generator=gen(seed))
        # band share 5 = the lone non-forest pixel + 4 forest pixels of the square (topping
        # up the short class); the rest wants 5 - 4 = 1 forest and 4 non-forest, of which
        # there are none left, so 5 forest
        assert points[8, 8] == 0
        assert int(labelled(points[5:12, 5:12]).sum()) >= 5
        assert class_counts(points) == (9, 1)
    # more points than the band holds: the whole band (49 pixels) is labelled
    points = sample_points(mask, 200, "boundary", generator=gen(0))
    assert labelled(points[5:12, 5:12]).all() and class_counts(points) == (199, 1)


def test_edge_band_matches_max_pool2d_dilation():
    for seed, shape in enumerate([(16, 16), (37, 23), (5, 64), (1, 9), (64, 64)]):
        mask = (torch.rand(shape, generator=gen(seed)) < 0.03 + 0.9 * (seed % 2)).long()
        mask.view(-1)[0], mask.view(-1)[-1] = 0, 1  # both classes, so an edge
        classes = torch.stack((mask.float(), 1 - mask.float()))
        near = F.max_pool2d(classes, 2 * BOUNDARY_WIDTH + 1, 1, BOUNDARY_WIDTH)
        expected = torch.where(mask.bool(), near[1], near[0]) > 0
        assert expected.any()
        assert torch.equal(edge_band(mask, BOUNDARY_WIDTH), expected)


@pytest.mark.parametrize("value", [0, 1])
def test_boundary_without_an_edge_falls_back_to_balanced(value):
    mask = torch.full((16, 16), value)
    for seed in range(5):
        assert torch.equal(
            sample_points(mask, 10, "boundary", generator=gen(seed)),
            sample_points(mask, 10, "balanced", generator=gen(seed)),
        )


def test_spatial_strategies_keep_their_guarantees_on_random_shapes():
    g = gen(123)
    for it in range(40):
        h, w = torch.randint(1, 30, (2,), generator=g).tolist()
        mask = (torch.rand(h, w, generator=g) < float(torch.rand(1, generator=g))).long()
        n = int(torch.randint(0, h * w + 3, (1,), generator=g)) if it % 2 else 2 + it % 9
        k = min(n, h * w)
        spread = labelled(sample_points(mask, n, "spread", generator=gen(it)))
        assert int(spread.sum()) == k
        if k:  # at most one point per cell of the documented grid
            rows, cols = grid_shape(k, h, w)
            ys, xs = spread.nonzero(as_tuple=True)
            # the cell of row y: the last i with i * h // rows <= y
            cell = ((ys + 1) * rows - 1) // h * cols + ((xs + 1) * cols - 1) // w
            assert len(set(cell.tolist())) == k
        points = sample_points(mask, n, "boundary", generator=gen(it))
        assert class_counts(points) == class_counts(
            sample_points(mask, n, "balanced", generator=gen(it))
        )
        band = edge_band(mask, BOUNDARY_WIDTH)
        expected = min(math.ceil(BOUNDARY_SHARE * k), int(band.sum()))
        assert int(labelled(points)[band].sum()) >= expected


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


@pytest.mark.parametrize("strategy", POINT_STRATEGIES)
def test_batch_tile_equals_sample_points_with_the_tile_generator(strategy):
    masks = random_masks(3, size=24)
    points = sample_points_batch(masks, 20, strategy, seed=5, tile_ids=[4, 0, 9])
    for i, tile_id in enumerate([4, 0, 9]):
        alone = sample_points(masks[i], 20, strategy, generator=gen(_tile_seed(5, tile_id)))
        assert torch.equal(points[i].long(), alone)


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


@pytest.mark.parametrize("strategy", ["balanced", "spread", "boundary"])
def test_batch_labels_exactly_the_points_of_each_full_size_tile(strategy):
    masks = random_masks(8, size=256)
    points = sample_points_batch(masks, 200, strategy, seed=0)
    assert labelled(points).sum(dim=(1, 2)).tolist() == [200] * 8
    assert torch.equal(points[labelled(points)], masks[labelled(points)].to(points.dtype))


# --- sparse form ------------------------------------------------------------------------

# two 2x3 tiles: tile 0 labels (0, 1) = 1 and (1, 2) = 0; tile 1 labels (0, 0) = 0
HAND_LABELS = torch.tensor([[[255, 1, 255], [255, 255, 0]],
                            [[0, 255, 255], [255, 255, 255]]], dtype=torch.uint8)


def test_sparse_form_of_hand_labels():
    sparse = SparsePoints.from_dense(HAND_LABELS)
    assert len(sparse) == 2 and sparse.tile_shape == (2, 3)
    assert sparse.offsets.tolist() == [0, 2, 3] and sparse.offsets.dtype == torch.int64
    assert sparse.pixels.tolist() == [1, 5, 0] and sparse.pixels.dtype == torch.int32
    assert sparse.values.tolist() == [1, 0, 0] and sparse.values.dtype == torch.uint8
    assert sparse.nbytes == 3 * 8 + 3 * 4 + 3 * 1
    assert torch.equal(sparse.to_dense(), HAND_LABELS)
    # tiles 1, 0, 1 of a [3, 2, 3] map: flat indices 0 + 0; 6 + 1, 6 + 5; 12 + 0
    index, values = sparse.select([1, 0, 1])
    assert index.tolist() == [0, 7, 11, 12] and values.tolist() == [0, 1, 0, 0]
    assert torch.equal(sparse.to_dense(np.array([1, 0, 1])), HAND_LABELS[[1, 0, 1]])
    assert sparse.to_dense([]).shape == (0, 2, 3)


def test_scatter_points_fills_the_rest_with_ignore_index(host_reads):
    with host_reads.watching():  # builds a batch's labels on the device without reading it
        dense = scatter_points(torch.tensor([0, 5]), torch.tensor([1, 0], dtype=torch.uint8),
                               (1, 2, 3))
    assert host_reads.calls == []
    assert dense.tolist() == [[[1, 255, 255], [255, 255, 0]]] and dense.dtype == torch.uint8


@pytest.mark.parametrize(("strategy", "seed", "n"),
                         [("balanced", 0, 10), ("uniform", 3, 7), ("forest", 5, 40),
                          ("spread", 1, 9), ("boundary", 2, 12), ("balanced", 4, 300)])
def test_sparse_points_are_the_points_of_sample_points_batch(strategy, seed, n):
    masks = random_masks(5, size=16, seed=seed)
    masks[0] = 0  # forest: no point at all on this tile
    ids = [7, 3, 11, 0, 2]
    sparse = sample_points_sparse(masks, n, strategy, seed=seed, tile_ids=ids)
    dense = sample_points_batch(masks, n, strategy, seed=seed, tile_ids=ids)
    assert torch.equal(sparse.to_dense(), dense)
    for i, tile_id in enumerate(ids):  # and each tile those of sample_points, independently
        alone = sample_points(masks[i], n, strategy, generator=gen(_tile_seed(seed, tile_id)))
        assert torch.equal(sparse.to_dense([i])[0].long(), alone)
    counts = (sparse.offsets[1:] - sparse.offsets[:-1]).tolist()
    assert counts == labelled(dense).sum(dim=(1, 2)).tolist()
    bounds = sparse.offsets.tolist()
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):  # ascending in each tile
        assert torch.equal(sparse.pixels[start:end], sparse.pixels[start:end].sort().values)


def test_sparse_zero_points_labels_every_pixel_and_errors_match_the_batch():
    masks = random_masks(2, size=4)
    assert torch.equal(sample_points_sparse(masks, 0).to_dense(), masks)
    with pytest.raises(ValueError, match=r"tile_ids.*2 ids.*got 3"):
        sample_points_sparse(masks, 3, tile_ids=[0, 1, 2])
    with pytest.raises(ConfigError, match="points"):
        sample_points_sparse(masks, -1)
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        sample_points_sparse(HALF_MASK, 3)


def test_fifty_points_take_258_bytes_per_tile_not_a_dense_map():
    masks = random_masks(10, size=64)
    sparse = sample_points_sparse(masks, 50, "balanced", seed=0)
    # per point an int32 pixel and a uint8 value, per tile an int64 offset, plus one offset
    assert sparse.nbytes == 10 * (50 * (4 + 1) + 8) + 8
    assert sparse.nbytes / 10 < 1024  # the dense uint8 map of a 64 px tile: 4096 bytes


def test_a_points_module_adds_its_strategies(monkeypatch):
    """A ``forest_seg/points_<name>.py`` module with ``STRATEGIES`` is a new strategy: the
    sampler, TrainConfig and the CLIs accept it without any other file changing."""
    import pkgutil
    import sys
    import types

    from forest_seg import points, strategy_registry
    from forest_seg.config import TrainConfig

    def corner(mask, n_forest, n_points, generator):  # the first n pixels in raster order
        return torch.arange(min(n_points, mask.numel()))

    module = types.ModuleType("forest_seg.points_corner")
    module.STRATEGIES = {"corner": corner}
    monkeypatch.setitem(sys.modules, "forest_seg.points_corner", module)
    monkeypatch.setattr(strategy_registry, "_PLUGINS", None)
    found = [pkgutil.ModuleInfo(None, name, False) for name in ("points_spatial", "points_corner")]
    monkeypatch.setattr(strategy_registry.pkgutil, "iter_modules", lambda path: found)
    assert strategy_registry.plugin_modules() == ["points_corner"]  # spatial: a built-in's
    assert points.POINT_STRATEGIES[-1] == "corner"
    labels = sample_points(HALF_MASK, 3, "corner")
    assert labels.view(-1)[:3].tolist() == [1, 1, 0] and int(labelled(labels).sum()) == 3
    assert TrainConfig(point_strategy="corner").point_strategy == "corner"
