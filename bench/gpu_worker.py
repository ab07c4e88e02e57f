"""One measuring process of the GPU check (:mod:`bench.gpu`), printing JSON lines on stdout::

    python -m bench.gpu_worker MODE --config JSON [--device cuda] [options]

Modes:

- ``environment``: versions, the device, its memory, the MPS control binary.
- ``precision``: the trial's real ``train_epoch``/``evaluate`` in fp32, bf16 autocast and
  bf16 + channels_last (:mod:`bench.gpu_steps`): a ``precision`` and an ``evaluation`` line
  per variant, and one ``checkpoint`` line (after fp32: a checkpoint holds fp32 weights and
  Adam state whatever the variant).
- ``trial``: one trial's start-up cost by part, measured in this fresh process (process
  start, imports, device context, data, model, first step), then an ``{"event": "ready"}``
  line; with ``--wait`` it waits for ``go`` on stdin (so packed trials start together), trains
  for ``--seconds`` and ends with an ``{"event": "done"}`` line (images/s, peak memory).

Heavy imports happen inside the modes, so ``trial`` can time them. Needs PyTorch only (no Ray,
Optuna or pandas).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from forest_seg.cli import run_cli
from forest_seg.config import TrainConfig

from .report import cpu_model

MPS_CONTROL = "nvidia-cuda-mps-control"
# tiles per timed call of train_epoch in a packed trial: a few batches, so a trial's window
# ends within a few steps of --seconds (whole epochs would overrun it by up to an epoch)
PACKED_CHUNK_BATCHES = 8


def emit(record: dict) -> None:
    """One JSON line on the process's stdout, flushed at once (the parent reads it as it
    comes); :func:`main` sends every other print to stderr."""
    print(json.dumps(record), file=sys.__stdout__, flush=True)


def environment(device_name: str) -> dict:
    """The software and the device (``cuda_available`` tells the parent what ``auto`` means)."""
    import torch

    from forest_seg.train import available_cpus

    cpuinfo = Path("/proc/cpuinfo")
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpu": cpu_model(cpuinfo.read_text() if cpuinfo.exists() else ""),
            "cpus": available_cpus(),
            "host_memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available(),
            "mps_control": shutil.which(MPS_CONTROL), "nvidia_smi": nvidia_smi()}
    if torch.cuda.is_available() and device_name != "cpu":
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info(0)
        info.update(device=props.name, capability=f"{props.major}.{props.minor}",
                    device_count=torch.cuda.device_count(), total_memory_bytes=total,
                    free_memory_bytes=free, multiprocessors=props.multi_processor_count)
    else:
        info.update(device="cpu", device_count=0)
    return info


def nvidia_smi() -> str | None:
    """Driver, compute mode and MIG mode as ``nvidia-smi`` reports them (read only)."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,driver_version,compute_mode,mig.mode.current",
             "--format=csv,noheader"]
    done = subprocess.run(query, capture_output=True, text=True, timeout=30)
    return done.stdout.strip() or done.stderr.strip()


def precision(cfg: TrainConfig, device_name: str, max_epochs: int, seconds: float) -> None:
    """A ``precision`` and an ``evaluation`` line per variant (``seconds`` of timed training
    at most per variant), and a ``checkpoint`` line after the first."""
    import torch

    from forest_seg.batches import prepare_trial_data

    from .gpu_steps import VARIANTS, TimedModel, time_checkpoint, time_evaluation, time_training

    device = torch.device(device_name)
    data = prepare_trial_data(cfg)
    for variant in VARIANTS:
        run = TimedModel.build(cfg, variant, device)
        emit({"section": "precision", "variant": variant,
              **time_training(run, data, max_epochs, time.monotonic() + seconds)})
        emit({"section": "evaluation", "variant": variant, **time_evaluation(run, data)})
        if variant == "fp32":
            emit({"section": "checkpoint", **time_checkpoint(run)})
        del run
        if device.type == "cuda":
            torch.cuda.empty_cache()


@contextmanager
def timed(parts: dict, name: str):
    start = time.perf_counter()
    yield
    parts[name] = time.perf_counter() - start


def trial(config: dict, device_name: str, launched_at: float, started: float, seconds: float,
          wait: bool, threads: int | None) -> None:
    """Start-up by part, an optional warm-up epoch and timed training (see module doc);
    ``started`` is when this process reached its ``main``."""
    parts = {"process_s": started - launched_at}
    with timed(parts, "imports_s"):  # and the config's checks, which import torch
        torch = importlib.import_module("torch")
        train = importlib.import_module("forest_seg.train")
        batches = importlib.import_module("forest_seg.batches")
        modelling = importlib.import_module("forest_seg.model")
        cfg = TrainConfig.from_dict(config)
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    with timed(parts, "device_s"):  # the CUDA context
        torch.zeros(1, device=device)
        _synchronize(torch, device)
    with timed(parts, "data_s"):  # decoded tiles (cache), split, the trial's points
        data = batches.prepare_trial_data(cfg)
    with timed(parts, "model_s"):
        model = modelling.build_model(head=cfg.head, pretrained="none",
                                      encoder_stages=cfg.encoder_stages).to(device)
        channels_last = cfg.channels_last and device.type == "cuda"
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = train.make_optimizer(cfg, model)
    with timed(parts, "first_step_s"):
        batch = next(data.train.batches(cfg.batch_size, device, None, 0, channels_last,
                                        drop_single=True))
        train.train_step(cfg, model, optimizer, batch, device)
        _synchronize(torch, device)
    parts["total_s"] = time.time() - launched_at
    if not wait:
        emit({"event": "ready", **parts})
        return
    with timed(parts, "warmup_epoch_s"):
        train.train_epoch(cfg, model, optimizer, data.train, device,
                          train.epoch_order(cfg, 1, len(data.train)))
    emit({"event": "ready", **parts})
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("gpu_worker: stdin closed before 'go'")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    images, epoch, start = 0, 2, time.perf_counter()
    while time.perf_counter() - start < seconds:
        order = train.epoch_order(cfg, epoch, len(data.train))
        for chunk in order.split(cfg.batch_size * PACKED_CHUNK_BATCHES):
            images += train.train_epoch(cfg, model, optimizer, data.train, device,
                                        chunk)["images"]
            if time.perf_counter() - start >= seconds:
                break
        epoch += 1
    elapsed = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    emit({"event": "done", "images": images, "seconds": elapsed,
          "images_per_s": images / elapsed, "max_memory_allocated_bytes": memory})


def _synchronize(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_worker")
    p.add_argument("mode", choices=("environment", "precision", "trial"))
    p.add_argument("--config", default="{}", help="the trial's TrainConfig as JSON")
    p.add_argument("--device", default="cpu")
    p.add_argument("--launched-at", type=float, default=None,
                   help="time.time() when the parent started this process")
    p.add_argument("--seconds", type=float, default=0.0,
                   help="precision: timed training per variant at most; trial: timed window")
    p.add_argument("--max-epochs", type=int, default=5, help="precision: timed epochs")
    p.add_argument("--wait", action="store_true", help="trial: warm up, then wait for 'go'")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's, all the CPUs)")
    return p


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    sys.stdout = sys.stderr  # stdout carries the JSON lines only (emit), never a stray print
    args = build_parser().parse_args(argv)
    config = json.loads(args.config)
    if args.mode == "trial":
        trial(config, args.device, args.launched_at or started, started, args.seconds,
              args.wait, args.threads)
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.mode == "environment":
        emit({"section": "environment", **environment(args.device)})
    else:
        precision(TrainConfig.from_dict(config), args.device, args.max_epochs, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))  # bad input (data, config): one "error: ..." line on stderr
