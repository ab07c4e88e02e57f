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
    """

    def __init__(self, num_classes: int = 2, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes: expected >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        """Forget every accumulated pixel (start a new validation pass)."""
        self._confusion.zero_()

    @property
    def confusion(self) -> torch.Tensor:
        """int64 [C, C] CPU tensor (a copy): rows = target class, columns = predicted class."""
        return self._confusion.clone()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch to the confusion matrix.

        Args:
            pred: integer tensor [B, H, W] (or any shape equal to ``target``'s) of predicted
                class ids in ``[0, C)``, e.g. ``logits.argmax(1)``. Any device.
            target: integer tensor of the same shape: class ids or ``ignore_index``.

        Raises:
            ValueError: shapes differ, or a class id outside ``[0, C)``.
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target: expected equal shapes, got {tuple(pred.shape)} and "
                f"{tuple(target.shape)}"
            )
        counted = target != self.ignore_index
        t = target[counted].long()
        p = pred.to(target.device)[counted].long()
        c = self.num_classes
        for name, ids in (("target", t), ("pred", p)):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= c):
                raise ValueError(
                    f"{name}: expected class ids in [0, {c}), got values in "
                    f"[{int(ids.min())}, {int(ids.max())}]"
                )
        counts = torch.bincount(t * c + p, minlength=c * c)
        self._confusion += counts.reshape(c, c).cpu()

    def _ratio(self, numerator: int, denominator: int, cls: int) -> float:
        """``numerator / denominator`` with the degenerate rule of the class docstring."""
        if denominator:
            return numerator / denominator
        cm = self._confusion
        absent = int(cm[cls, :].sum()) == 0 and int(cm[:, cls].sum()) == 0
        return 1.0 if absent else 0.0

    def _iou(self, cls: int) -> float:
        cm = self._confusion
        tp = int(cm[cls, cls])
        fp = int(cm[:, cls].sum()) - tp
        fn = int(cm[cls, :].sum()) - tp
        return self._ratio(tp, tp + fp + fn, cls)

    def compute(self) -> dict[str, float]:
        """Metrics of everything accumulated since construction or :meth:`reset`.

        Returns:
            ``{"iou", "iou_nonforest", "miou", "dice", "precision", "recall", "accuracy"}``
            as Python floats.

        Raises:
            ValueError: no pixel accumulated.
        """
        cm = self._confusion
        total = int(cm.sum())
        if total == 0:
            raise ValueError("no pixels accumulated: call update() with non-ignored targets first")
        tp = int(cm[FOREST, FOREST])
        fp = int(cm[:, FOREST].sum()) - tp
        fn = int(cm[FOREST, :].sum()) - tp
        ious = [self._iou(cls) for cls in range(self.num_classes)]
        return {
            "iou": ious[FOREST],
            "iou_nonforest": ious[NON_FOREST],
            "miou": sum(ious) / len(ious),
            "dice": self._ratio(2 * tp, 2 * tp + fp + fn, FOREST),
            "precision": self._ratio(tp, tp + fp, FOREST),
            "recall": self._ratio(tp, tp + fn, FOREST),
            "accuracy": int(cm.diagonal().sum()) / total,
        }
