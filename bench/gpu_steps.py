"""Timing a trial's real training and validation on one device: images/s of
``forest_seg.train.train_epoch`` and ``evaluate``, device time against wall time per step,
host-device synchronisations, peak memory, and the cost of saving a checkpoint.

Made for CUDA and rehearsed on a CPU, where the device time, the syncs and the memory are
``None`` (null in the JSON lines): a CPU has no events, no syncs and no allocator statistics.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from forest_seg.batches import TrialData
from forest_seg.checkpoint import CHECKPOINT_FILE, save_checkpoint
from forest_seg.config import TrainConfig
from forest_seg.model import build_model
from forest_seg.train import epoch_order, evaluate, make_optimizer, train_epoch, training_state

# name -> (bf16 autocast, channels_last); the trial's default is bf16_cl (TrainConfig)
VARIANTS = {"fp32": (False, False), "bf16": (True, False), "bf16_cl": (True, True)}


class StepTimes:
    """Per-step times of the training steps run inside the ``with`` block.

    A step starts at the model's forward (a forward pre-hook) and ends after
    ``optimizer.step`` (a step post-hook), so ``train_epoch`` runs unchanged. ``host_ms``: the
    host's time to issue each step. ``device_ms`` (CUDA only, else ``None``): the time between
    two CUDA events recorded at those points; recording never waits for the device, and the
    events are read after the block. When the host issues steps faster than the device runs
    them this is the device's time per step; when the device waits for the host, it includes
    that wait, and equals the wall time per step.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device) -> None:
        self.model, self.optimizer, self.cuda = model, optimizer, device.type == "cuda"
        self._host: list[tuple[float, float]] = []
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._open: tuple | None = None
        self._hooks: list = []

    def _start(self, *_) -> None:
        event = torch.cuda.Event(enable_timing=True) if self.cuda else None
        if event is not None:
            event.record()
        self._open = (time.perf_counter(), event)

    def _end(self, *_) -> None:
        started, start_event = self._open
        self._host.append((started, time.perf_counter()))
        if self.cuda:
            end_event = torch.cuda.Event(enable_timing=True)
            end_event.record()
            self._events.append((start_event, end_event))

    def __enter__(self) -> StepTimes:
        self._hooks = [self.model.register_forward_pre_hook(self._start),
                       self.optimizer.register_step_post_hook(self._end)]
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()

    @property
    def steps(self) -> int:
        return len(self._host)

    def host_ms(self) -> list[float]:
        return [(end - start) * 1e3 for start, end in self._host]

    def device_ms(self) -> list[float] | None:
        if not self.cuda:
            return None
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in self._events]


class SyncCount:
    """Counts the host-device synchronisations inside the ``with`` block on CUDA, with
    ``torch.cuda.set_sync_debug_mode("warn")``: each one raises a warning, recorded here.
    ``count`` stays ``None`` on other devices."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.count: int | None = None
        self._catcher = warnings.catch_warnings(record=True)
        self._seen: list = []

    def __enter__(self) -> SyncCount:
        if self.cuda:
            self._seen = self._catcher.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
            self._catcher.__exit__(*exc)
            self.count = sum("synchroniz" in str(w.message) for w in self._seen)


@dataclass
class TimedModel:
    """A freshly built model and optimizer in one variant, ready to time."""

    cfg: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device

    @classmethod
    def build(cls, cfg: TrainConfig, variant: str, device: torch.device) -> TimedModel:
        """The trial's model as ``fit`` builds it, with ``variant``'s precision and layout."""
        amp, channels_last = VARIANTS[variant]
        cfg = cfg.replace(amp=amp, channels_last=channels_last)
        torch.manual_seed(cfg.seed)
        model = build_model(head=cfg.head, pretrained="none",
                            encoder_stages=cfg.encoder_stages).to(device)
        if channels_last and device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return cls(cfg, model, make_optimizer(cfg, model), device)


def peak_memory(device: torch.device) -> int | None:
    """Bytes of the device's peak allocation so far (``None`` off CUDA)."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def time_training(run: TimedModel, data: TrialData, max_epochs: int, deadline: float) -> dict:
    """One warm-up epoch, then up to ``max_epochs`` timed epochs of ``train_epoch`` (at least
    one; no new one after ``deadline``, a ``time.monotonic()`` value).

    Returns images/s over the timed epochs; wall, host and device ms per step (medians of the
    steps for host and device); syncs per timed epoch (CUDA); the peak memory of training.
    """
    n = len(data.train)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    train_epoch(run.cfg, run.model, run.optimizer, data.train, run.device,
                epoch_order(run.cfg, 1, n))
    images, wall, syncs, host, device_ms = 0, 0.0, [], [], []
    for epoch in range(2, max_epochs + 2):
        with StepTimes(run.model, run.optimizer, run.device) as steps, \
                SyncCount(run.device) as sync:
            start = time.perf_counter()
            out = train_epoch(run.cfg, run.model, run.optimizer, data.train, run.device,
                              epoch_order(run.cfg, epoch, n))
            wall += time.perf_counter() - start
        images += out["images"]
        syncs.append(sync.count)
        host += steps.host_ms()
        device_ms += steps.device_ms() or []
        if time.monotonic() > deadline:
            break
    return {"images_per_s": images / wall, "timed_epochs": len(syncs), "steps": len(host),
            "wall_ms_per_step": wall * 1e3 / len(host),
            "host_ms_per_step": statistics.median(host),
            "device_ms_per_step": statistics.median(device_ms) if device_ms else None,
            "syncs_per_epoch": None if run.device.type != "cuda" else syncs,
            "max_memory_allocated_bytes": peak_memory(run.device)}


def time_evaluation(run: TimedModel, data: TrialData) -> dict:
    """``evaluate`` once to warm up, once timed: images/s, seconds and syncs of the pass."""
    evaluate(run.cfg, run.model, data.val, run.device)
    with SyncCount(run.device) as sync:
        start = time.perf_counter()
        scores = evaluate(run.cfg, run.model, data.val, run.device)
        seconds = time.perf_counter() - start
    return {"images": len(data.val), "seconds": seconds,
            "images_per_s": len(data.val) / seconds, "syncs": sync.count,
            "val_miou": scores.get("val_miou")}


def time_checkpoint(run: TimedModel, saves: int = 2) -> dict:
    """Seconds of each of ``saves`` checkpoint saves of the full training state (the trial's
    ``training_state`` through ``save_checkpoint``: device-to-host copies, serialisation and
    an atomic write to a temporary folder), and the file's bytes."""
    seconds = []
    with tempfile.TemporaryDirectory(prefix="forest-seg-gpu-check-") as folder:
        path = Path(folder) / CHECKPOINT_FILE
        for _ in range(saves):
            start = time.perf_counter()
            save_checkpoint(path, training_state(run.cfg, run.model, run.optimizer, 1, []))
            seconds.append(time.perf_counter() - start)
        size = path.stat().st_size
    return {"seconds": seconds, "bytes": size}
