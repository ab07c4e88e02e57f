"""Partial (masked) focal cross-entropy: the loss of point-supervised training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from forest_seg.points import IGNORE_INDEX


def partial_focal_ce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Focal cross-entropy averaged over the labelled pixels only.

    Per labelled pixel the loss is ``-a_t * (1 - p_t) ** gamma * log p_t``, where ``p_t`` is the
    softmax probability of the true class; the result is the sum over labelled pixels divided by
    their count (not by the sum of the ``a_t``). With ``gamma=0, alpha=None`` it equals
    ``F.cross_entropy(logits, labels, ignore_index=ignore_index)``.

    Computed in float32 from ``log_softmax`` whatever the logits' dtype (safe under bf16/fp16
    autocast, finite for extreme logits). Ignored pixels get exactly zero gradient. With no
    labelled pixel at all the loss is ``0.0``, still connected to ``logits`` (zero gradient),
    never NaN.

    Args:
        logits: float tensor [B, C, H, W].
        labels: integer tensor [B, H, W] (int64 or uint8): class ids in ``[0, C)`` or
            ``ignore_index``.
        gamma: focusing parameter, >= 0 (0 = plain cross-entropy).
        alpha: ``None`` (every class weighted 1) or a float in [0, 1]: forest (class 1) pixels
            weighted ``alpha``, non-forest (class 0) ``1 - alpha``. Binary (C == 2) only.
        ignore_index: label of unlabelled pixels.

    Returns:
        float32 scalar tensor.

    Raises:
        ValueError: bad shapes or label dtype, ``gamma < 0``, ``alpha`` outside [0, 1], or
            ``alpha`` set with C != 2.
    """
    if logits.ndim != 4:
        raise ValueError(f"logits: expected shape [B, C, H, W], got {tuple(logits.shape)}")
    batch, num_classes, height, width = logits.shape
    if tuple(labels.shape) != (batch, height, width):
        raise ValueError(
            f"labels: expected shape {(batch, height, width)} to match logits "
            f"{tuple(logits.shape)}, got {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise ValueError(f"labels: expected an integer tensor, got dtype {labels.dtype}")
    if gamma < 0:
        raise ValueError(f"gamma: expected a value >= 0, got {gamma!r}")
    if alpha is not None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha: expected None or a value in [0, 1], got {alpha!r}")
        if num_classes != 2:
            raise ValueError(f"alpha: defined for 2 classes only, logits have {num_classes}")

    labels = labels.long()
    labelled = labels != ignore_index
    # ignored pixels gather class 0 (any valid class) and are masked out below
    target = labels.masked_fill(~labelled, 0).unsqueeze(1)
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, target).squeeze(1)
    loss = -log_p
    if gamma != 0:
        # 1 - p_t as -expm1(log p_t) keeps precision when p_t ~ 1; the clamp keeps the gradient
        # of (1 - p_t) ** gamma finite for gamma < 1 when p_t rounds to exactly 1
        one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(torch.float32).tiny)
        loss = loss * one_minus_p**gamma
    if alpha is not None:
        loss = loss * torch.where(labels == 1, alpha, 1.0 - alpha)
    total = torch.where(labelled, loss, 0.0).sum()
    # no labelled pixel: total is an exact 0 (still a function of logits), 0 / 1 = 0, no NaN
    return total / labelled.sum().clamp_min(1)
