"""How the analysis draws and saves a figure for a paper: axes labelled in words, series at
the same x dodged apart, and every plot written as PNG and SVG (text kept as text).

Importing this module does not import matplotlib; figures get an Agg canvas of their own, so
pyplot's global backend is never touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from forest_seg.analysis.summary import OPTIMISTIC

AXIS_LABELS = {
    "points": "Points per image",
    "lr": "Learning rate",
    "seed": "Seed",
    "epoch": "Epoch",
    "epochs": "Epochs reached",
    "max_epochs": "Planned epochs",
    "point_strategy": "Point strategy",
    "encoder_stages": "Encoder stages",
    "val_miou": "Validation mIoU",
    "val_iou": "Validation IoU (forest)",
    "val_dice": "Validation Dice (forest)",
    "val_loss": "Validation loss",
    "train_loss": "Training loss",
    "best_val_miou": f"Validation mIoU at the best epoch ({OPTIMISTIC})",
    "best_val_iou": f"Validation IoU (forest) at the best epoch ({OPTIMISTIC})",
}
# offset between neighbouring series on a log axis in decades, and on a linear axis in its
# units (e.g. epochs); with many series the offsets shrink to stay within the total spread
LOG_DODGE, LOG_SPREAD = 0.025, 0.15
LINEAR_DODGE, LINEAR_SPREAD = 0.06, 0.4


def axis_label(column: str) -> str:
    """A results column in words for an axis or a legend: ``val_miou`` -> ``Validation mIoU``;
    unknown names get their underscores as spaces and ``val``/``train`` spelt out."""
    if column in AXIS_LABELS:
        return AXIS_LABELS[column]
    words = column.replace("_", " ").split()
    spelt = {"val": "validation", "train": "training", "lr": "learning rate"}
    text = " ".join(spelt.get(w, w) for w in words)
    return text[:1].upper() + text[1:]


def dodge(x, index: int, count: int, log: bool = False) -> np.ndarray:
    """``x`` shifted for series ``index`` of ``count`` drawn at the same x positions, so that
    their markers and error bars do not overlap: offsets are symmetric around the true x,
    :data:`LINEAR_DODGE` apart (at most :data:`LINEAR_SPREAD` between the outer two), or on a
    log axis a factor of 10**:data:`LOG_DODGE` (:data:`LOG_SPREAD`). ``x``: [N]; returns
    float [N]."""
    step, spread = (LOG_DODGE, LOG_SPREAD) if log else (LINEAR_DODGE, LINEAR_SPREAD)
    offset = (index - (count - 1) / 2) * min(step, spread / max(count - 1, 1))
    x = np.asarray(x, dtype=float)
    return x * 10**offset if log else x + offset


def new_figure(width: float, height: float):
    """A constrained-layout :class:`matplotlib.figure.Figure` on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (PNG, 100 dpi) and beside it the same name as ``.svg``, its
    text left as text (editable, searchable), both cropped to what is drawn; returns the
    PNG's path."""
    import matplotlib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(path.with_suffix(".svg"), bbox_inches="tight")
    return path
