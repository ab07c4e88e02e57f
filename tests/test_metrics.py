"""Dataset-level confusion-matrix metrics: hand-computed values and degenerate cases."""

import math

import pytest
import torch

from forest_seg.metrics import SegmentationMetrics
from forest_seg.points import IGNORE_INDEX

METRIC_NAMES = {"iou", "iou_nonforest", "miou", "dice", "precision", "recall", "accuracy"}


def metrics_of(*pairs: tuple[list, list]) -> dict[str, float]:
    """Metrics over (pred, target) pairs given as nested lists [H][W], one update each."""
    m = SegmentationMetrics()
    for pred, target in pairs:
        m.update(torch.tensor([pred]), torch.tensor([target]))
    return m.compute()


# hand-made 2x4 pair
TARGET = [[1, 1, 1, 0], [0, 0, 1, 0]]
PRED = [[1, 1, 0, 0], [1, 0, 1, 1]]
# target 0 pixels -> pred (0, 1, 0, 1): TN = 2, FP = 2
# target 1 pixels -> pred (1, 1, 0, 1): FN = 1, TP = 3


def test_hand_computed_pair():
    m = SegmentationMetrics()
    m.update(torch.tensor([PRED]), torch.tensor([TARGET]))
    assert torch.equal(m.confusion, torch.tensor([[2, 2], [1, 3]]))
    assert m.confusion.dtype == torch.int64
    result = m.compute()
    assert set(result) == METRIC_NAMES
    assert all(type(v) is float for v in result.values())
    expected = {
        "iou": 3 / (3 + 2 + 1),  # 0.5
        "iou_nonforest": 2 / (2 + 1 + 2),  # 0.4 (TN / (TN + FN + FP))
        "miou": (0.5 + 0.4) / 2,  # 0.45
        "dice": 2 * 3 / (2 * 3 + 2 + 1),  # 2/3
        "precision": 3 / (3 + 2),  # 0.6
        "recall": 3 / (3 + 1),  # 0.75
        "accuracy": 5 / 8,
    }
    assert result == pytest.approx(expected)


def test_accumulates_dataset_level_not_per_image_mean():
    empty_pred, empty_target = [[0, 0, 0, 0]], [[0, 0, 0, 0]]  # no forest anywhere
    pred, target = [[1, 0, 0, 0]], [[1, 1, 0, 0]]  # TP 1, FN 1, TN 2
    both = metrics_of((empty_pred, empty_target), (pred, target))
    concatenated = metrics_of((empty_pred + pred, empty_target + target))
    assert both == concatenated
    # one confusion matrix [[6, 0], [1, 1]]: forest IoU 1 / 2, non-forest 6 / 7
    assert both["iou"] == pytest.approx(0.5)
    assert both["iou_nonforest"] == pytest.approx(6 / 7)
    assert both["accuracy"] == pytest.approx(7 / 8)
    # a per-image mean would differ: (1.0 + 0.5) / 2 by our rule, (0 + 0.5) / 2 in the notebook
    per_image = [metrics_of((empty_pred, empty_target))["iou"], metrics_of((pred, target))["iou"]]
    assert per_image == [1.0, 0.5]
    assert both["iou"] != pytest.approx(sum(per_image) / 2)


def test_all_forest_prediction_on_60_percent_forest():
    target = [[1, 1, 1, 1, 1, 1, 0, 0, 0, 0]]
    result = metrics_of(([[1] * 10], target))
    assert result["iou"] == pytest.approx(0.6)
    assert result["iou_nonforest"] == 0.0
    assert result["miou"] == pytest.approx(0.3)
    assert result["precision"] == pytest.approx(0.6)
    assert result["recall"] == 1.0
    assert result["dice"] == pytest.approx(12 / 16)
    assert result["accuracy"] == pytest.approx(0.6)


def test_class_absent_from_target_and_prediction_scores_one():
    result = metrics_of(([[0, 0], [0, 0]], [[0, 0], [0, 0]]))
    assert result == dict.fromkeys(METRIC_NAMES, 1.0)


def test_forest_predicted_but_absent_from_target_scores_zero():
    result = metrics_of(([[1, 0], [0, 0]], [[0, 0], [0, 0]]))
    assert not any(math.isnan(v) for v in result.values())
    assert result["iou"] == 0.0 and result["dice"] == 0.0 and result["precision"] == 0.0
    assert result["recall"] == 0.0  # denominator TP + FN = 0 but forest was predicted
    assert result["iou_nonforest"] == pytest.approx(3 / 4)
    assert result["miou"] == pytest.approx(3 / 8)


def test_forest_present_but_never_predicted_scores_zero():
    result = metrics_of(([[0, 0], [0, 0]], [[1, 0], [0, 0]]))
    assert result["precision"] == 0.0  # denominator TP + FP = 0 but forest is in the target
    assert result["recall"] == 0.0 and result["iou"] == 0.0 and result["dice"] == 0.0
    assert result["accuracy"] == pytest.approx(3 / 4)


def test_ignored_target_pixels_are_skipped():
    target = [row + [IGNORE_INDEX, IGNORE_INDEX] for row in TARGET]
    pred = [row + [1, 0] for row in PRED]
    m = SegmentationMetrics()
    m.update(torch.tensor([pred]), torch.tensor([target], dtype=torch.uint8))
    assert torch.equal(m.confusion, torch.tensor([[2, 2], [1, 3]]))
    assert m.compute() == metrics_of((PRED, TARGET))


def test_compute_without_pixels_raises():
    m = SegmentationMetrics()
    with pytest.raises(ValueError, match="no pixels accumulated"):
        m.compute()
    m.update(torch.zeros(1, 2, 2, dtype=torch.int64), torch.full((1, 2, 2), IGNORE_INDEX))
    with pytest.raises(ValueError, match="no pixels accumulated"):
        m.compute()


def test_reset_starts_a_new_pass():
    m = SegmentationMetrics()
    m.update(torch.ones(1, 2, 2, dtype=torch.int64), torch.zeros(1, 2, 2, dtype=torch.int64))
    m.reset()
    with pytest.raises(ValueError, match="no pixels accumulated"):
        m.compute()
    m.update(torch.tensor([PRED]), torch.tensor([TARGET]))
    assert m.compute() == metrics_of((PRED, TARGET))


def test_confusion_is_a_copy():
    m = SegmentationMetrics()
    m.update(torch.tensor([PRED]), torch.tensor([TARGET]))
    m.confusion.zero_()
    assert int(m.confusion.sum()) == 8


def test_three_classes_miou_averages_all():
    m = SegmentationMetrics(num_classes=3)
    # confusion [[1, 0, 0], [0, 1, 1], [0, 0, 1]]: IoUs 1, 1/2, 1/2
    m.update(torch.tensor([[0, 1, 2, 2]]), torch.tensor([[0, 1, 1, 2]]))
    result = m.compute()
    assert result["iou_nonforest"] == 1.0 and result["iou"] == pytest.approx(0.5)
    assert result["miou"] == pytest.approx(2 / 3)


def test_bad_inputs_raise():
    m = SegmentationMetrics()
    with pytest.raises(ValueError, match=r"equal shapes.*\(1, 2\).*\(1, 3\)"):
        m.update(torch.zeros(1, 2, dtype=torch.int64), torch.zeros(1, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"num_classes.*1"):
        SegmentationMetrics(num_classes=1)


@pytest.mark.parametrize(
    ("pred", "target", "message", "confusion"),
    [([[0, 2, -1]], [[0, 1, 1]], r"pred: .*\[0, 2\).* 2 counted pixel", [[1, 0], [0, 0]]),
     ([[0, 1, 1]], [[0, 7, -3]], r"target: .*\[0, 2\).* 2 counted pixel", [[1, 0], [0, 0]]),
     # a bad target is reported, not its bad pred; the two good pixels are counted
     ([[5, 1, 0]], [[9, 1, 0]], r"target: .* 1 counted pixel", [[1, 0], [0, 1]])],
)
def test_class_ids_out_of_range_raise_at_compute(pred, target, message, confusion):
    """update() never reads the device, so it cannot check values: compute() does, once."""
    m = SegmentationMetrics()
    m.update(torch.tensor([pred]), torch.tensor([target]))
    with pytest.raises(ValueError, match=message):
        m.compute()
    assert m.confusion.tolist() == confusion


def test_a_bad_pred_at_an_ignored_pixel_is_not_counted():
    m = SegmentationMetrics()
    m.update(torch.tensor([[1, 9]]), torch.tensor([[1, IGNORE_INDEX]]))
    assert m.compute()["accuracy"] == 1.0


def test_update_never_reads_the_device_and_compute_reads_it_once(host_reads):
    m = SegmentationMetrics()
    with host_reads.watching():
        for _ in range(3):
            m.update(torch.tensor([PRED]), torch.tensor([TARGET]))
        assert host_reads.calls == []
        result = m.compute()
    assert host_reads.calls == ["tolist"]
    assert torch.equal(m.confusion, 3 * torch.tensor([[2, 2], [1, 3]]))
    assert result == metrics_of((PRED, TARGET))  # ratios of counts all scaled by 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs_accumulate_on_the_gpu():
    m = SegmentationMetrics()
    m.update(torch.tensor([PRED], device="cuda"), torch.tensor([TARGET], device="cuda"))
    assert m.device.type == "cuda" and m.confusion.device.type == "cpu"
    assert m.compute() == metrics_of((PRED, TARGET))
