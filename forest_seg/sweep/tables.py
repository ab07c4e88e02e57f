"""The closing text of a sweep: the trials table and the per-configuration summary."""

from __future__ import annotations

import pandas as pd

from ..results import HISTORY_FILE, RESULTS_FILE

EXPERIMENT = "experiment"  # key of results.attrs: the experiment's path


def results_table(results: pd.DataFrame) -> str:
    """The trials sorted by final val mIoU, as plain text; the best-epoch value is labelled
    optimistic (picked on validation)."""
    columns = [c for c in ("points", "lr", "point_strategy", "head", "seed", "status", "epochs",
                           "val_miou", "val_iou", "best_val_miou", "train_time_s")
               if c in results.columns]
    table = results.sort_values("val_miou", ascending=False, na_position="last")[columns]
    table = table.rename(columns={"best_val_miou": "best_val_miou(optimistic)"})
    return table.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def configuration_table(path: str) -> str:
    """Per configuration, best first: the final val mIoU's mean and 95% interval over the
    COMPLETED seeds (all at the same epoch; the seeds and epoch are shown), the trials left
    out of that mean, and, for an ASHA run, every seed at the common epoch."""
    from ..analysis import load_experiments, summarize

    def interval(mean: float, lo: float, hi: float, seeds: int, epoch: object) -> str:
        at = f"epoch {epoch:g}" if pd.notna(epoch) else "no epoch"
        if not seeds:
            return "no seed"
        if seeds < 2:
            return f"{mean:.3f} (1 seed at {at}: inconclusive)"
        return f"{mean:.3f} [{lo:.3f}, {hi:.3f}] ({seeds} seeds at {at})"

    trials, epochs = load_experiments([path])
    summary = summarize(trials, "val_miou", metrics=["val_miou"], epochs=epochs)
    summary = summary.sort_values("val_miou_mean", ascending=False, na_position="last")
    rows = []
    for row in summary.itertuples():
        line = (f"  {row.config:<40} final val mIoU "
                + interval(row.val_miou_mean, row.val_miou_ci_lo, row.val_miou_ci_hi,
                           row.n_seeds, row.at_epoch)
                + f"; left out: {row.n_early_stopped} early-stopped, {row.n_diverged} "
                  f"diverged, {row.n_error} error")
        if "common_epoch" in summary.columns:
            line += "; every seed: " + interval(
                row.val_miou_at_common_mean, row.val_miou_at_common_ci_lo,
                row.val_miou_at_common_ci_hi, row.n_seeds_at_common, row.common_epoch)
        rows.append(line)
    return "\n".join(rows)


def closing_text(results: pd.DataFrame) -> str:
    """What a driver prints when its sweep ends: the trials table, the per-configuration
    summary (local experiments) and where the files are."""
    path = results.attrs[EXPERIMENT]
    where = f"results: {path}/{RESULTS_FILE}  (per epoch: {path}/{HISTORY_FILE})"
    if results.empty:
        return f"no trial finished; {where}"
    if "://" in path:
        return results_table(results) + "\n" + where
    return "\n".join([
        results_table(results),
        "\nper configuration (final val mIoU over COMPLETED seeds, mean and 95% t-interval):",
        configuration_table(path), where, f"analysis: python sweeps/analyze.py {path}"])
