"""Plots fit for a paper: PNG and SVG of every plot, axes labelled in words, and series at the
same x dodged apart."""

import re

import numpy as np
import pandas as pd
import pytest

from forest_seg.analysis import plots
from forest_seg.analysis.plot_style import (
    LINEAR_DODGE,
    LINEAR_SPREAD,
    LOG_DODGE,
    axis_label,
    dodge,
)

WRITTEN = ("miou_vs_points", "miou_vs_lr", "learning_curves", "asha_stops")


def study() -> tuple[pd.DataFrame, pd.DataFrame]:
    """points {10, 50} x lr {1e-3, 1e-4} x seeds {0, 1}, 3 epochs; one trial stopped at 1;
    per epoch e: val mIoU = final - 0.05 * (3 - e)."""
    rows, history = [], []
    for points in (10, 50):
        for lr in (1e-3, 1e-4):
            for seed in (0, 1):
                final = 0.5 + points / 1000 + seed / 100 + (lr == 1e-4) / 10
                epochs = 1 if (points, lr, seed) == (10, 1e-3, 1) else 3
                tid = f"p{points}-lr{lr:g}-s{seed}"
                rows.append({"trial_id": tid, "points": points, "lr": lr, "seed": seed,
                             "point_strategy": "balanced", "max_epochs": 3, "epochs": epochs,
                             "status": "COMPLETED" if epochs == 3 else "EARLY_STOPPED",
                             "val_miou": final, "best_val_miou": final, "val_loss": 0.4,
                             "baseline_colour_miou": 0.45})
                history += [{"trial_id": tid, "epoch": e, "val_miou": final - 0.05 * (3 - e),
                             "val_loss": 1 / e, "train_loss": 1 / e, "lr": lr}
                            for e in range(1, epochs + 1)]
    return pd.DataFrame(rows), pd.DataFrame(history)


def svg_text(path) -> str:
    """The text elements of an SVG written with its text kept as text."""
    return " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text()))


def test_every_plot_is_png_and_svg_with_axes_in_words(tmp_path):
    trials, epochs = study()
    written = {p.name: p.path for p in plots.make_plots(trials, epochs, tmp_path)
               if p.path is not None}
    assert sorted(written) == sorted(WRITTEN)
    for name, png in written.items():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.with_suffix(".svg").is_file(), name
    texts = {name: svg_text(png.with_suffix(".svg")) for name, png in written.items()}
    assert "Points per image (log scale)" in texts["miou_vs_points"]
    assert "Validation mIoU, final epoch" in texts["miou_vs_points"]
    assert "Learning rate (log scale)" in texts["miou_vs_lr"]
    for label in ("Epoch", "Validation loss", "Validation mIoU"):
        assert label in texts["learning_curves"]
    assert "Epochs reached (dashed: planned)" in texts["asha_stops"]
    for text in texts.values():  # no raw column name on any axis or title
        assert not re.search(r"\b(val_miou|val_loss|max_epochs)\b", text)


@pytest.mark.parametrize(("column", "words"), [
    ("val_miou", "Validation mIoU"), ("lr", "Learning rate"), ("points", "Points per image"),
    ("epoch", "Epoch"), ("val_precision", "Validation precision"),
    ("train_time_s", "Training time s")])
def test_axis_label_spells_columns_out(column, words):
    assert axis_label(column) == words


def test_dodge_offsets_series_symmetrically_and_within_the_spread():
    x = np.array([10.0, 50.0])
    left, right = dodge(x, 0, 2, log=True), dodge(x, 1, 2, log=True)
    np.testing.assert_allclose(left, x * 10 ** (-LOG_DODGE / 2))
    np.testing.assert_allclose(right, x * 10 ** (LOG_DODGE / 2))
    np.testing.assert_allclose(dodge([2.0], 1, 3), [2.0])  # the middle of three stays put
    np.testing.assert_allclose(dodge([2.0], 0, 3), [2.0 - LINEAR_DODGE])
    many = [dodge([2.0], i, 40)[0] for i in range(40)]
    assert len(set(many)) == 40 and max(many) - min(many) == pytest.approx(LINEAR_SPREAD)


def test_series_at_the_same_x_are_drawn_apart(tmp_path, monkeypatch):
    figures = {}
    monkeypatch.setattr(plots, "save_figure",
                        lambda fig, path: figures.setdefault(path.stem, fig) and path)
    trials, epochs = study()
    plots.make_plots(trials, epochs, tmp_path)
    # miou_vs_points: per lr a network series and a colour-table series, at points 10 and 50
    ax = figures["miou_vs_points"].axes[0]
    xs = [tuple(bars.lines[0].get_xdata()) for bars in ax.containers]  # the errorbar series
    assert len(xs) == 4 and len(set(xs)) == 4  # four series, four distinct x offsets
    for x in xs:
        assert x[0] == pytest.approx(10, rel=0.1) and x[1] == pytest.approx(50, rel=0.1)
    # learning curves: the two seeds of an lr at the same epochs, drawn at different x
    curves = figures["learning_curves"].axes[1]  # lr 1e-3, val loss
    firsts = sorted(line.get_xdata()[0] for line in curves.lines)
    assert len(firsts) == 4 and len(set(firsts)) == 4
    assert all(abs(x - 1) < LINEAR_SPREAD for x in firsts)
