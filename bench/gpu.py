"""The GPU path: fp32 vs bf16 autocast + channels_last at the report's scale (256 px, full
ResNet50), trials packed on one GPU, and the projected time of the report's full study.

Everything takes a device name, so the code paths also run (slowly, tiny) on a CPU in tests;
the benchmark measures them only when CUDA is available.
"""

from __future__ import annotations

import multiprocessing as mp
import time

from forest_seg.config import TrainConfig

from .report import median
from .runs import collect_results
from .throughput import BareRun

# The report's full study: 7 configurations x 10 epochs of the 5,108-tile dataset (80/20).
STUDY_RUNS, STUDY_EPOCHS, STUDY_TRAIN, STUDY_VAL = 7, 10, 4086, 1022
STUDY_TARGET_MIN = 10.0
VAL_COST = 1 / 3  # a validation image costs about a third of a training image (forward only)


def precision_throughput(cfg: TrainConfig, device: str, epochs: int = 3) -> dict[str, float]:
    """Median images/s over ``epochs`` (after one warm-up epoch) of the bare loop in fp32 and
    in bf16 autocast + channels_last, on the real data path."""
    out = {}
    for name, fast in (("fp32", False), ("bf16_cl", True)):
        run = BareRun.create(cfg, device, amp=fast, channels_last=fast)
        rows = [run.epoch(e) for e in range(1, epochs + 2)][1:]
        out[name] = median(r["images_per_s"] for r in rows)
        del run
        _empty_cache(device)
    return out


def _empty_cache(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _pack_worker(cfg_dict: dict, device: str, seconds: float, threads: int, barrier,
                 results) -> None:
    import torch

    torch.set_num_threads(threads)  # the node's CPUs split between the packed trials
    cfg = TrainConfig.from_dict(cfg_dict)
    run = BareRun.create(cfg, device, amp=True, channels_last=True)
    run.epoch(1)  # warm-up: allocator, kernels, page faults
    barrier.wait(600)
    images, start, epoch = 0, time.perf_counter(), 2
    while time.perf_counter() - start < seconds:
        images += run.epoch(epoch)["images"]
        epoch += 1
    elapsed = time.perf_counter() - start
    barrier.wait(600)
    results.put({"images": images, "seconds": elapsed})


def packed_throughput(cfg: TrainConfig, device: str, trials: int, seconds: float) -> float:
    """Aggregate images/s of ``trials`` processes training at once on one device (bf16 +
    channels_last), each for at least ``seconds`` after a warm-up epoch."""
    from forest_seg.train import available_cpus

    threads = max(1, available_cpus() // trials)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(trials), ctx.Queue()
    procs = [ctx.Process(target=_pack_worker,
                         args=(cfg.to_dict(), device, seconds, threads, barrier, results))
             for _ in range(trials)]
    for p in procs:
        p.start()
    rows = collect_results("packed trials", results, procs, 600 + 4 * seconds)
    return sum(r["images"] / r["seconds"] for r in rows)


def study_minutes(images_per_s: float) -> float:
    """Projected minutes of the report's full study at an aggregate training throughput."""
    images = STUDY_RUNS * STUDY_EPOCHS * (STUDY_TRAIN + VAL_COST * STUDY_VAL)
    return images / images_per_s / 60 if images_per_s > 0 else float("nan")
