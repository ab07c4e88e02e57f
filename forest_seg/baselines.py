"""Reference scores that need no training, computed on a trial's own split and labels.

A network's mIoU means something only beside what trivial predictors score on the same
validation tiles:

- **all forest**: every pixel predicted forest (mIoU = forest IoU / 2; non-forest IoU is 0);
- **colour table**: a per-pixel colour lookup table built from the *same* labelled pixels the
  network trained on (its point labels, or every pixel for dense supervision). Each RGB colour
  is quantised to ``FINE_BINS`` levels per channel; a bin predicts the majority label of the
  labelled training pixels that fall into it. A bin no training pixel fell into takes the
  majority of the coarser bin around it (``COARSE_BINS``, finest first), and finally the
  majority class of all labelled pixels. Ties go to forest.

Both take seconds (numpy bincounts, no training), so every trial reports them beside its own
scores, paired by seed: the network's gain over the colour table is a paired difference.
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics import FOREST, SegmentationMetrics

FINE_BINS = 16
COARSE_BINS = (8, 4, 2)
BASELINE_KEYS = ("baseline_all_forest_miou", "baseline_colour_miou", "baseline_colour_iou")


def colour_bins(images: np.ndarray, bins: int) -> np.ndarray:
    """Colour bin index of every pixel: uint8 [..., 3] RGB -> int64 [...] in [0, bins**3)."""
    q = images.astype(np.int64) * bins // 256
    return (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]


def _majority_per_bin(bins_of_pixels: np.ndarray, labels: np.ndarray, n_bins: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(label, labelled-pixel count) per bin from labelled pixels' bins and 0/1 labels."""
    forest = np.bincount(bins_of_pixels, weights=labels, minlength=n_bins)
    total = np.bincount(bins_of_pixels, minlength=n_bins)
    return (2 * forest >= total).astype(np.int64), total


def fit_colour_table(colours: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The colour lookup table of the labelled pixels.

    Args:
        colours: uint8 [P,3] RGB of the labelled pixels.
        values: int [P] their labels, 0 or 1.

    Returns:
        int64 [FINE_BINS**3]: the predicted class (0 or 1) of each fine colour bin.

    Raises:
        ValueError: no labelled pixel at all.
    """
    if not len(values):
        raise ValueError("colour table: no labelled pixel to build it from")
    values = np.asarray(values, dtype=np.int64)
    prior = int(2 * values.sum() >= len(values))
    table = np.full(FINE_BINS**3, prior, dtype=np.int64)
    levels = np.arange(FINE_BINS)
    for bins in (*COARSE_BINS[::-1], FINE_BINS):  # coarsest first; finer bins overwrite
        majority, count = _majority_per_bin(colour_bins(colours, bins), values, bins**3)
        # the coarse level holding each fine level's colours, per channel
        per_channel = levels * (256 // FINE_BINS) * bins // 256
        coarse_of_fine = ((per_channel[:, None, None] * bins + per_channel[None, :, None]) * bins
                          + per_channel[None, None, :]).reshape(-1)
        known = count[coarse_of_fine] > 0
        table[known] = majority[coarse_of_fine][known]
    return table


def predict_colour(table: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Class map of ``images`` (uint8 [N,S,S,3]) under ``table``: int64 [N,S,S]."""
    return table[colour_bins(images, FINE_BINS)]


def _scores(pred: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    metrics = SegmentationMetrics()
    metrics.update(torch.from_numpy(pred), torch.from_numpy(masks.astype(np.int64)))
    return metrics.compute()


def baseline_scores(train_colours: np.ndarray, train_values: np.ndarray,
                    val_images: np.ndarray, val_masks: np.ndarray) -> dict[str, float]:
    """The baselines of one trial (keys :data:`BASELINE_KEYS`).

    Args:
        train_colours: uint8 [P,3] RGB of the training pixels labelled as the network got
            them; ``train_values`` int [P] their 0/1 labels.
        val_images: uint8 [M,S,S,3] validation tiles; ``val_masks`` uint8 [M,S,S] in {0,1}.
    """
    all_forest = _scores(np.full(val_masks.shape, FOREST, dtype=np.int64), val_masks)
    colour = _scores(predict_colour(fit_colour_table(train_colours, train_values), val_images),
                     val_masks)
    return {"baseline_all_forest_miou": all_forest["miou"],
            "baseline_colour_miou": colour["miou"], "baseline_colour_iou": colour["iou"]}
