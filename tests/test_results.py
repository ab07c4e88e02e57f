"""forest_seg.results: one trial's results row from hand-made per-epoch rows."""

from __future__ import annotations

import math

import pytest

from forest_seg.results import HISTORY_COLUMNS, RESULT_TAIL, trial_summary, unique_epochs

CONFIG = {"points": 50, "lr": 1e-4, "seed": 0, "epochs": 4}


def epoch(e: int, miou: float, iou: float, loss: float, **extra) -> dict:
    return {"epoch": e, "val_miou": miou, "val_iou": iou, "val_loss": loss,
            "train_loss": 1.0 / e, "val_dice": iou + 0.05, "lr": 1e-4, "epoch_time_s": 2.0,
            "diverged": False, **extra}


def test_best_epoch_is_one_coherent_set():
    # val mIoU peaks at epoch 2; forest IoU peaks at epoch 3 and val loss is lowest at epoch 4:
    # every best_* value must come from epoch 2, not from each metric's own best epoch
    rows = [epoch(1, 0.50, 0.60, 0.9), epoch(2, 0.70, 0.65, 0.7), epoch(3, 0.68, 0.80, 0.6),
            epoch(4, 0.66, 0.75, 0.5)]
    row = trial_summary("t1", CONFIG, rows)
    assert row["best_epoch"] == 2
    assert (row["best_val_miou"], row["best_val_iou"], row["best_val_loss"]) == (0.70, 0.65, 0.7)
    assert row["best_train_loss"] == 0.5 and row["best_val_dice"] == pytest.approx(0.70)
    assert "best_lr" not in row and "best_epoch_time_s" not in row  # not metrics
    # the headline columns are the final epoch's
    assert (row["val_miou"], row["val_iou"], row["val_loss"]) == (0.66, 0.75, 0.5)
    assert row["status"] == "COMPLETED" and row["epochs"] == 4 and row["train_time_s"] == 8.0
    assert [k for k in row if k in RESULT_TAIL] == list(RESULT_TAIL)


def test_best_epoch_tie_takes_the_first_and_skips_nan():
    rows = [epoch(1, float("nan"), 0.1, 2.0), epoch(2, 0.6, 0.5, 0.8),
            epoch(3, 0.6, 0.7, 0.4, diverged=True)]
    row = trial_summary("t1", CONFIG, rows)
    assert row["best_epoch"] == 2 and row["best_val_iou"] == 0.5
    assert row["status"] == "DIVERGED"


def test_no_epoch_gives_nan_best_values():
    row = trial_summary("t1", CONFIG, [], errored=True)
    assert row["status"] == "ERROR" and row["epochs"] == 0
    assert all(math.isnan(row[k]) for k in ("best_epoch", "best_val_miou", "best_val_iou",
                                            "best_val_loss", "val_miou"))


def test_baselines_are_copied_from_the_last_row_that_has_them():
    rows = [epoch(1, 0.5, 0.6, 0.9, baseline_all_forest_miou=0.31, baseline_colour_miou=0.52),
            epoch(2, 0.6, 0.6, 0.8, baseline_all_forest_miou=0.31, baseline_colour_miou=0.52),
            epoch(3, float("nan"), float("nan"), float("inf"), diverged=True)]
    row = trial_summary("t1", CONFIG, rows)
    assert row["baseline_all_forest_miou"] == 0.31 and row["baseline_colour_miou"] == 0.52
    assert "baseline_all_forest_miou" in HISTORY_COLUMNS  # the drivers keep them per epoch
    assert "baseline_colour_miou" not in trial_summary("t2", CONFIG, rows[2:])


def test_the_training_tile_count_is_copied_from_the_last_row_that_has_it():
    rows = [epoch(1, 0.5, 0.6, 0.9, train_tiles=19), epoch(2, 0.6, 0.6, 0.8, train_tiles=19)]
    assert trial_summary("t1", CONFIG, rows)["train_tiles"] == 19
    assert math.isnan(trial_summary("t2", CONFIG, [epoch(1, 0.5, 0.6, 0.9)])["train_tiles"])


def test_unique_epochs_keeps_the_last_report_of_each_epoch():
    rows = [epoch(1, 0.1, 0.1, 1.0), epoch(2, 0.2, 0.2, 1.0), epoch(3, 0.3, 0.3, 1.0),
            epoch(2, 0.25, 0.2, 1.0), epoch(3, 0.35, 0.3, 1.0)]  # a retry from epoch 1
    kept = unique_epochs(rows)
    assert [r["epoch"] for r in kept] == [1, 2, 3]
    assert [r["val_miou"] for r in kept] == [0.1, 0.25, 0.35]
    assert [r["val_miou"] for r in unique_epochs([{"val_miou": 0.4}, {"val_miou": 0.5}])] == [
        0.4, 0.5]  # no epoch key: numbered by position


def test_validation_columns_are_every_metric_the_trial_reports():
    """The schema's val_* columns are the loss and every SegmentationMetrics key: a new
    metric joins history.csv by adding it to VAL_COLUMNS (this test fails until it is)."""
    import torch

    from forest_seg.metrics import SegmentationMetrics
    from forest_seg.results import VAL_COLUMNS

    metrics = SegmentationMetrics()
    metrics.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    assert set(VAL_COLUMNS) == {"val_loss", *(f"val_{key}" for key in metrics.compute())}
    assert set(VAL_COLUMNS) <= set(HISTORY_COLUMNS)


def test_an_errored_trial_keeps_its_reason_and_others_have_none():
    rows = [epoch(1, 0.5, 0.6, 0.9)]
    failed = trial_summary("t1", CONFIG, rows, errored=True, error="DatasetError: data=/d: 1 tile")
    assert failed["status"] == "ERROR" and failed["error"] == "DatasetError: data=/d: 1 tile"
    assert trial_summary("t2", CONFIG, rows, error="stale")["error"] is None  # not errored
    assert trial_summary("t3", CONFIG, [], errored=True)["error"] is None  # Ray stored none


def test_best_checkpoint_is_the_best_scored_epoch_still_kept():
    from forest_seg.results import best_checkpoint

    rows = [epoch(1, 0.5, 0.5, 1.0, checkpoint="t/checkpoint_000000"),
            epoch(2, 0.7, 0.6, 0.9, checkpoint="t/checkpoint_000001"),
            epoch(3, 0.6, 0.6, 0.9),  # no checkpoint saved at this epoch
            epoch(4, 0.65, 0.6, 0.9, checkpoint="t/checkpoint_000002")]
    assert best_checkpoint(rows) == "t/checkpoint_000001"
    kept = {"t/checkpoint_000000", "t/checkpoint_000002"}  # the best one was deleted
    assert best_checkpoint(rows, kept.__contains__) == "t/checkpoint_000002"
    diverged = [epoch(1, float("nan"), float("nan"), float("inf"), checkpoint="t/c0"),
                epoch(2, float("nan"), float("nan"), float("inf"), checkpoint="t/c1")]
    assert best_checkpoint(diverged) == "t/c1"  # no score: the latest
    assert best_checkpoint([epoch(1, 0.5, 0.5, 1.0)]) is None
