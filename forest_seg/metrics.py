"""Dataset-level segmentation metrics from one confusion matrix per validation pass."""

from __future__ import annotations

import torch

from forest_seg.points import IGNORE_INDEX

FOREST = 1
NON_FOREST = 0


class SegmentationMetrics:
    """Accumulates a confusion matrix over a whole validation pass and derives metrics from it.

    Metrics are dataset-level: every pixel of every image counts once in a single confusion
    matrix, so an image in which a class is absent does not drag that class's score to 0 (the
    per-image macro-average defect of the original notebook).

    ``compute()`` returns Python floats:

    - ``iou``: forest (class 1) IoU, ``TP / (TP + FP + FN)``; ``iou_nonforest``: class 0 IoU;
    - ``miou``: mean IoU over all classes (both, for the binary task). Report it beside ``iou``:
      predicting "all forest" on a 60 % forest set gives ``iou`` 0.6 but ``miou`` 0.3;
    - ``dice`` (forest F1, ``2TP / (2TP + FP + FN)``), ``precision`` and ``recall`` (forest);
    - ``accuracy``: share of counted pixels predicted correctly.

    Degenerate rule (never NaN): a ratio whose denominator is 0 is ``1.0`` when the class is
    absent from both target and prediction (nothing to get wrong) and ``0.0`` otherwise
    (e.g. precision of a class never predicted but present in the target).

    Pixels whose target is ``ignore_index`` are skipped. ``compute()`` before any counted pixel
    (no update, or only ignored pixels) raises ``ValueError``.

    The counts stay on the device of the updates' tensors: ``update`` never waits for the
    device (no reads, no boolean indexing, no ``bincount``), so a validation pass reads the
    device once, in ``compute()``. Class ids outside ``[0, C)`` are therefore counted apart and
    reported by ``compute()`` (a ``ValueError`` naming ``pred`` or ``target``), not by
    ``update``.
    """

    def __init__(self, num_classes: int = 2, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes: expected >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        cells = num_classes * num_classes
        # bins: the C*C confusion cells (target * C + pred), then ignored pixels, pixels with a
        # bad target id, pixels with a good target id but a bad pred id
        self._ignored, self._bad_target, self._bad_pred = cells, cells + 1, cells + 2
        self._counts = torch.zeros(cells + 3, dtype=torch.int64)

    def reset(self) -> None:
        """Forget every accumulated pixel (start a new validation pass)."""
        self._counts.zero_()

    @property
    def device(self) -> torch.device:
        """Where the counts are kept: the device of the last update's ``target`` (CPU before
        any update)."""
        return self._counts.device

    @property
    def confusion(self) -> torch.Tensor:
        """int64 [C, C] CPU tensor (a copy): rows = target class, columns = predicted class."""
        c = self.num_classes
        return self._counts[: c * c].reshape(c, c).to("cpu", copy=True)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch to the confusion matrix, on ``target``'s device, without a host sync.

        Args:
            pred: integer tensor [B, H, W] (or any shape equal to ``target``'s) of predicted
                class ids in ``[0, C)``, e.g. ``logits.argmax(1)``. Any device.
            target: integer tensor of the same shape: class ids or ``ignore_index``.

        Raises:
            ValueError: shapes differ. (Class ids outside ``[0, C)`` raise in ``compute()``.)
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target: expected equal shapes, got {tuple(pred.shape)} and "
                f"{tuple(target.shape)}"
            )
        c = self.num_classes
        t = target.long()
        p = pred.to(target.device).long()
        cell = torch.where((p < 0) | (p >= c), self._bad_pred, t * c + p)
        cell = torch.where((t < 0) | (t >= c), self._bad_target, cell)
        cell = torch.where(t == self.ignore_index, self._ignored, cell)
        if self._counts.device != cell.device:
            self._counts = self._counts.to(cell.device)
        # a count per bin by comparison and sum: no bincount (on a GPU it reads the device to
        # size its output), and one bool [N] at a time rather than an [N, bins] one-hot
        self._counts += torch.stack([(cell == k).sum() for k in range(len(self._counts))])

    def compute(self) -> dict[str, float]:
        """Metrics of everything accumulated since construction or :meth:`reset` (one read
        of the device).

        Returns:
            ``{"iou", "iou_nonforest", "miou", "dice", "precision", "recall", "accuracy"}``
            as Python floats.

        Raises:
            ValueError: no pixel accumulated, or a class id outside ``[0, C)`` was given
                (``target``: other than ``ignore_index``; ``pred``: at a counted pixel).
        """
        counts = self._counts.tolist()
        c = self.num_classes
        for name, bad in (("target", counts[self._bad_target]), ("pred", counts[self._bad_pred])):
            if bad:
                raise ValueError(f"{name}: expected class ids in [0, {c}), got {bad} counted "
                                 f"pixel(s) outside that range")
        cm = [counts[row * c:(row + 1) * c] for row in range(c)]
        total = sum(map(sum, cm))
        if total == 0:
            raise ValueError("no pixels accumulated: call update() with non-ignored targets first")
        ious = [_iou(cm, cls) for cls in range(c)]
        tp, fp, fn = _outcomes(cm, FOREST)
        return {
            "iou": ious[FOREST],
            "iou_nonforest": ious[NON_FOREST],
            "miou": sum(ious) / len(ious),
            "dice": _ratio(cm, 2 * tp, 2 * tp + fp + fn, FOREST),
            "precision": _ratio(cm, tp, tp + fp, FOREST),
            "recall": _ratio(cm, tp, tp + fn, FOREST),
            "accuracy": sum(cm[k][k] for k in range(c)) / total,
        }


def _outcomes(cm: list[list[int]], cls: int) -> tuple[int, int, int]:
    """(TP, FP, FN) of class ``cls`` in confusion matrix ``cm`` (rows = target)."""
    tp = cm[cls][cls]
    return tp, sum(row[cls] for row in cm) - tp, sum(cm[cls]) - tp


def _ratio(cm: list[list[int]], numerator: int, denominator: int, cls: int) -> float:
    """``numerator / denominator`` with the degenerate rule of :class:`SegmentationMetrics`."""
    if denominator:
        return numerator / denominator
    absent = sum(cm[cls]) == 0 and sum(row[cls] for row in cm) == 0
    return 1.0 if absent else 0.0


def _iou(cm: list[list[int]], cls: int) -> float:
    tp, fp, fn = _outcomes(cm, cls)
    return _ratio(cm, tp, tp + fp + fn, cls)
