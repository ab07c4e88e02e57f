"""Tune vs bare PyTorch: images/s of one trial run through ``sweeps/grid.py`` against a bare
loop in this process with the same model, batches, tiles, device and threads.

The bare loop is what a trial's train phase would be with nothing around it: build_model,
the trial's optimizer and its own training step (``forest_seg.train.train_step``: the loss on
the trial's fixed point labels, backward, step), batches from the same memory-mapped tiles
through :meth:`SplitData.batches` (the "data path"); no Ray, no metrics, no validation, no
checkpoints. A second variant feeds batches gathered before the clock starts (the "ideal"
data path), which bounds what any data-loading work can cost.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from forest_seg.batches import TrialData, prepare_trial_data
from forest_seg.config import TrainConfig
from forest_seg.model import build_model
from forest_seg.train import epoch_order, make_optimizer, train_step

from .report import images_per_epoch, load_average, system_busy_seconds
from .runs import DriverRun, fixed_flags, run_grid


@dataclass
class ThroughputSettings:
    """One trial's fixed config, shared by the Tune run and the bare loop."""

    data: str
    image_size: int
    max_tiles: int | None
    batch_size: int
    encoder_stages: int
    epochs: int
    cpus: int
    device: str = "cpu"  # "cpu" or "cuda": the trial's and the bare loop's device
    points: int = 50
    lr: float = 1e-3
    seed: int = 0

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def config(self) -> TrainConfig:
        return TrainConfig(
            data=self.data, image_size=self.image_size, max_tiles=self.max_tiles,
            batch_size=self.batch_size, encoder_stages=self.encoder_stages, epochs=self.epochs,
            points=self.points, lr=self.lr, seed=self.seed, pretrained="none",
            device=self.device, threads=self.cpus,
        )

    def grid_flags(self) -> list[str]:
        """The driver's flags for exactly this one trial (FIFO, one seed, no dense reference)."""
        return [
            "--scheduler", "fifo", "--points", str(self.points), "--lrs", str(self.lr),
            "--base-points", str(self.points), "--base-lr", str(self.lr), "--seeds", "1",
            "--no-dense", "--max-concurrent", "1", "--cpus-per-trial", str(self.cpus),
            "--gpus-per-trial", "1" if self.cuda else "0", "--max-failures", "0",
            *fixed_flags({"data": self.data, "image_size": self.image_size,
                          "max_tiles": self.max_tiles, "batch_size": self.batch_size,
                          "encoder_stages": self.encoder_stages, "epochs": self.epochs,
                          "pretrained": "none", "device": self.device}),
        ]


@dataclass
class BareRun:
    """A bare model kept across measurement blocks (before and after the Tune run)."""

    cfg: TrainConfig
    data: TrialData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    amp: bool = False
    channels_last: bool = False
    rows: list[dict] = field(default_factory=list)

    @classmethod
    def create(cls, cfg: TrainConfig, device: str = "cpu", amp: bool = False,
               channels_last: bool = False) -> BareRun:
        # the trial's step reads amp (bf16 autocast, CUDA only) from the config
        cfg = cfg.replace(amp=amp, channels_last=channels_last)
        data = prepare_trial_data(cfg)
        torch.manual_seed(cfg.seed)
        dev = torch.device(device)
        model = build_model(head=cfg.head, pretrained="none",
                            encoder_stages=cfg.encoder_stages).to(dev)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(cfg, model)  # the trial's own optimizer choice
        return cls(cfg, data, model, optimizer, dev, amp, channels_last)

    @property
    def images_per_epoch(self) -> int:
        return images_per_epoch(len(self.data.train), self.cfg.batch_size)

    def _batches(self, epoch: int):
        order = epoch_order(self.cfg, epoch, len(self.data.train))  # the trial's own shuffle
        return self.data.train.batches(self.cfg.batch_size, self.device, order,
                                       0, self.channels_last, drop_single=True)

    def epoch(self, epoch: int, ideal: bool = False) -> dict:
        """Train one epoch; ``ideal`` gathers every batch before the clock starts."""
        batches = list(self._batches(epoch)) if ideal else self._batches(epoch)
        self.model.train()
        load = load_average()
        images, data_time = 0, 0.0
        busy_start = system_busy_seconds()
        cpu_start = time.process_time()
        start = wait = time.perf_counter()
        for batch in batches:
            data_time += time.perf_counter() - wait
            train_step(self.cfg, self.model, self.optimizer, batch, self.device)
            images += len(batch.image)
            wait = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        # Cores other processes used meanwhile: the machine's busy time minus this process's.
        foreign = (system_busy_seconds() - busy_start - cpu) / seconds if seconds else math.nan
        row = {"epoch": epoch, "path": "ideal" if ideal else "data path", "images": images,
               "seconds": seconds, "images_per_s": images / seconds if seconds else math.nan,
               "data_time_s": data_time, "cpu_s": cpu, "foreign_cores": max(foreign, 0.0),
               "load_avg": load}
        self.rows.append(row)
        return row

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def bare_block(run: BareRun, epochs: range, ideal_too: bool) -> None:
    """Train ``epochs`` on the data path, each followed by an ideal-path epoch when asked
    (paired, so a change in machine load hits both alike)."""
    for epoch in epochs:
        run.epoch(epoch)
        if ideal_too and epoch > 1:
            run.epoch(epoch, ideal=True)


def run_tune_trial(settings: ThroughputSettings, storage: Path, timeout_s: float,
                   env: dict[str, str] | None = None) -> DriverRun:
    """The same trial through Ray Tune (``sweeps/grid.py``, FIFO, one trial)."""
    run = run_grid(storage, "throughput", settings.grid_flags(), timeout_s, env, profile=True)
    if len(run.results) != 1 or run.results["status"].iloc[0] != "COMPLETED":
        status = run.results["status"].tolist() if "status" in run.results else "?"
        raise_missing(run, f"expected one COMPLETED trial, got {status}")
    if len(run.history) != settings.epochs:
        raise_missing(run, f"expected {settings.epochs} epochs in history.csv, "
                           f"got {len(run.history)}")
    return run


def raise_missing(run: DriverRun, what: str) -> None:
    from .runs import BenchError

    raise BenchError(f"the Tune throughput run at {run.path}: {what} (log: {run.log})")


def tune_overheads(run: DriverRun, images: int) -> dict[str, float]:
    """Where a Tune trial's wall time goes: driver total, trial total (Ray's time_total_s:
    set-up, epochs, reports, checkpoints), epochs (train + validation) and train phases."""
    history = run.history
    trial_total = float(run.results["train_time_s"].iloc[0])
    epochs_s = float(history["epoch_time_s"].sum())
    train_s = float((images / history["images_per_s"]).sum())
    return {"driver_wall_s": run.wall_s, "trial_total_s": trial_total, "epochs_s": epochs_s,
            "train_s": train_s, "outside_epochs_s": trial_total - epochs_s,
            "validation_s": epochs_s - train_s}
