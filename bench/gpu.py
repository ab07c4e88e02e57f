"""The prepared GPU check: one command, needing PyTorch only (no Ray, Optuna or pandas)::

    python -m bench.gpu --out $OUT/gpu.jsonl --budget-s 420      # on a GPU machine (< 8 min)
    python -m bench.gpu --device cpu --tiny                      # rehearsal: ~1 min on 2 cores

It writes JSON lines as it goes (stdout and ``--out``; one object per line, flushed, each with
a ``section`` key and ``elapsed_s``):

- ``settings``: the trial config measured, the budget, the packing plan;
- ``environment``: Python, torch, CUDA and cuDNN versions, the device, its memory, nvidia-smi;
- ``precision`` (one per variant: ``fp32``, ``bf16`` autocast, ``bf16_cl`` = bf16 +
  channels_last): the real ``train_epoch`` at 256 px with the full ResNet50, images/s, wall vs
  host vs device (CUDA events) ms per step, syncs per epoch, peak memory;
  ``evaluation`` (one per variant): ``evaluate``'s images/s and syncs; ``checkpoint``: the
  seconds and bytes of saving the training state (:mod:`bench.gpu_steps`);
- ``startup``: one trial's start-up by part, measured in a fresh process;
- ``packed`` (one per trials x MPS): aggregate images/s of 1, 2, 4 and 7 trials training at
  once on one GPU as separate processes, without and with CUDA MPS, peak memory per trial;
- ``projection``: the report's study x 3 seeds, projected from the figures above, with its
  assumptions;
- ``done``: the sections that failed or were skipped.

Each part runs in its own process (:mod:`bench.gpu_procs`) under a share of ``--budget-s``;
a part that fails or runs out of time writes a line with ``error`` (one that does not fit the
time left, a line with ``skipped``) and the check goes on; the exit status is 1 when a part
failed. The timings come from the GPU they ran on only; compare them within one run.

Data: the embedded synthetic dataset by default (512 tiles, generated at the first run). The
493-tile real sample (19 MB) can be carried to a GPU machine in a git-ignored folder of the
repository: ``mkdir -p local-data && cp -r ../shared/data/forest-aerial-sample local-data/``
then ``--data local-data/forest-aerial-sample`` (see ``bench/gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

from forest_seg.cli import run_cli
from forest_seg.config import TrainConfig
from forest_seg.errors import ConfigError

from .gpu_procs import mps_daemon, packed_run, stream_worker
from .gpu_worker import MPS_CONTROL

# The report's full study: 7 configurations x 10 epochs of the 5,108-tile dataset (80/20).
STUDY_RUNS, STUDY_EPOCHS, STUDY_TRAIN, STUDY_VAL = 7, 10, 4086, 1022
STUDY_SEEDS = 3
STUDY_TARGET_MIN = 10.0
VAL_COST = 1 / 3  # a validation image costs about a third of a training image (forward only)

SIZES = {  # the measured trial and the plan, full (a GPU) and --tiny (the CPU rehearsal)
    "full": {"image_size": 256, "encoder_stages": 4, "batch_size": 16, "max_tiles": None,
             "pack": (1, 2, 4, 7), "pack_seconds": 10.0, "max_epochs": 5, "threads": None},
    # one torch thread per process: the rehearsal shares its few cores with other work
    "tiny": {"image_size": 32, "encoder_stages": 1, "batch_size": 4, "max_tiles": 24,
             "pack": (1, 2), "pack_seconds": 2.0, "max_epochs": 1, "threads": 1},
}
PRECISION_SHARE = 0.4  # of the budget, for the precision/evaluation/checkpoint process
WORKER_MIN_S = 60.0  # time limit of the environment and start-up processes
RESERVE_S = 5.0  # kept back for the projection and the closing line


class JsonLines:
    """Writes records as JSON lines to stdout and, when given, a file; flushed at once.

    Every record gets its ``section`` and the seconds since the check began (``elapsed_s``);
    non-finite floats become null (JSON has no NaN)."""

    def __init__(self, path: Path | None, stream: IO[str] = sys.stdout) -> None:
        self.start = time.monotonic()
        self.stream = stream
        self.file = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(path, "w")  # closed by close()
            except OSError as e:
                raise ConfigError(f"--out {path}: cannot write there ({e.strerror})") from None
        self.records: list[dict] = []

    def write(self, section: str, **fields: Any) -> dict:
        record = {"section": section, "elapsed_s": round(time.monotonic() - self.start, 2),
                  **fields}
        text = json.dumps(_finite(record))
        for out in (self.stream, self.file):
            if out is not None:
                out.write(text + "\n")
                out.flush()
        self.records.append(record)
        return record

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@dataclass
class Budget:
    """Seconds the whole check may take, counted from its creation."""

    total_s: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.total_s - (time.monotonic() - self.start)


def guarded(lines: JsonLines, section: str, action: Callable[[], Any], **context: Any) -> Any:
    """Run one part: its result, or ``None`` after an ``error`` line for ``section`` (with
    ``context``) when it raises; the check goes on either way."""
    try:
        return action()
    except Exception as e:  # any failure of one part must leave the others running
        lines.write(section, **context, error=f"{type(e).__name__}: {e}")
        return None


@dataclass
class GpuCheck:
    """One run of the check: its plan, its output, the figures the projection needs."""

    cfg: TrainConfig
    sizes: dict
    lines: JsonLines
    budget: Budget
    cpus: int
    results: dict = field(default_factory=dict)

    def worker_args(self, mode: str, *extra: str, threads: int | None = None) -> list[str]:
        """A worker's arguments: ``threads`` torch threads, else the plan's (all CPUs)."""
        threads = threads or self.sizes["threads"]
        return [mode, "--config", json.dumps(self.cfg.to_dict()), "--device", self.cfg.device,
                *extra, *(["--threads", str(threads)] if threads else [])]

    def precision(self) -> None:
        timeout = min(PRECISION_SHARE * self.budget.total_s, self.budget.left() - RESERVE_S)
        per_variant = 0.5 * timeout / 3  # timed epochs; the rest: data, builds, warm-ups
        args = self.worker_args("precision", "--seconds", f"{per_variant:.1f}",
                                "--max-epochs", str(self.sizes["max_epochs"]))

        def record(line: dict) -> None:
            key = (line["section"], line.get("variant"))
            self.results[key] = self.lines.write(**line)

        stream_worker(args, timeout, record)

    def startup(self) -> None:
        def record(line: dict) -> None:
            line.pop("event")
            self.results[("startup", None)] = self.lines.write("startup", **line)

        stream_worker(self.worker_args("trial"), min(WORKER_MIN_S, self.budget.left()), record)

    def packed(self, mps_binary: str | None, mps_skipped: str | None) -> None:
        """Every packing of the plan without MPS, then with it (``mps_binary``, the MPS
        control program, else a ``skipped`` line giving ``mps_skipped``)."""
        sizes = self.sizes["pack"]
        runs = len(sizes) * (2 if mps_binary else 1)
        for i, trials in enumerate(sizes):
            guarded(self.lines, "packed", partial(self._pack, trials, None, runs - i),
                    trials=trials, mps=False)
        if mps_binary is None:
            self.lines.write("packed", mps=True, skipped=mps_skipped)
            return

        def with_mps() -> None:
            with mps_daemon(mps_binary) as env:
                for i, trials in enumerate(sizes):
                    guarded(self.lines, "packed", partial(self._pack, trials, env, len(sizes) - i),
                            trials=trials, mps=True)

        guarded(self.lines, "packed", with_mps, mps=True)

    def _pack(self, trials: int, mps_env: dict | None, runs_left: int) -> None:
        """One packing (``trials`` processes; through MPS when ``mps_env`` is given) within
        an equal share of the budget left to the ``runs_left`` packings still to run."""
        mps = mps_env is not None
        share = (self.budget.left() - RESERVE_S) / runs_left
        seconds = self.sizes["pack_seconds"]
        if share < seconds + 5:
            self.lines.write("packed", trials=trials, mps=mps,
                             skipped=f"{share:.0f} s of the budget per run left")
            return
        args = self.worker_args("trial", "--wait", "--seconds", str(seconds),
                                threads=self.sizes["threads"] or max(1, self.cpus // trials))
        row = packed_run(args, trials, share, mps_env)
        self.results[("packed", (trials, mps))] = self.lines.write("packed", mps=mps, **row)


def study_projection(results: dict) -> dict:
    """Projected minutes of the report's study (7 configurations x ``STUDY_SEEDS`` seeds x 10
    epochs) on one GPU, from the check's figures, with the assumptions stated.

    ``results`` maps (section, variant or (trials, mps)) to the lines written: the best
    ``packed`` aggregate (else the single ``bf16_cl`` trial) gives the training rate;
    validation runs at ``evaluation`` bf16_cl's rate times the same packing gain.
    """
    packed = {key[1]: row for key, row in results.items()
              if key[0] == "packed" and row is not None}
    single = results.get(("precision", "bf16_cl"))
    if packed:
        (trials, mps), best = max(packed.items(), key=lambda item: item[1]["images_per_s"])
        rate = best["images_per_s"]
        alone = packed.get((1, mps), {}).get("images_per_s") or (
            single["images_per_s"] if single else rate / trials)
    elif single is not None:
        trials, mps, rate, alone = 1, False, single["images_per_s"], single["images_per_s"]
    else:
        raise ValueError("no training rate measured (no packed or precision bf16_cl line)")
    evaluation = results.get(("evaluation", "bf16_cl"))
    val_rate = (evaluation["images_per_s"] * rate / alone if evaluation
                else rate / VAL_COST)
    startup = results.get(("startup", None))
    startup_s = startup["total_s"] if startup else 0.0
    checkpoint = results.get(("checkpoint", None))
    checkpoint_s = statistics.median(checkpoint["seconds"]) if checkpoint else 0.0
    n_trials = STUDY_RUNS * STUDY_SEEDS
    parts = {
        "train_s": n_trials * STUDY_EPOCHS * STUDY_TRAIN / rate,
        "validation_s": n_trials * STUDY_EPOCHS * STUDY_VAL / val_rate,
        "startup_s": math.ceil(n_trials / trials) * startup_s,
        "checkpoint_s": n_trials * STUDY_EPOCHS * checkpoint_s / trials,
    }
    return {
        "trials": n_trials, "epochs": STUDY_EPOCHS, "packed_trials": trials, "mps": mps,
        "train_images_per_s": rate, "val_images_per_s": val_rate, **parts,
        "total_min": sum(parts.values()) / 60, "target_min": STUDY_TARGET_MIN,
        "assumptions": [
            f"{STUDY_RUNS} configurations x {STUDY_SEEDS} seeds, {STUDY_EPOCHS} epochs each, "
            f"{STUDY_TRAIN} training and {STUDY_VAL} validation tiles at 256 px, batch 16",
            f"{trials} trial(s) at a time on one GPU (MPS: {mps}), the best packing measured",
            "validation gains from packing as training does"
            + ("" if evaluation else "; not measured: a third of a training image's cost"),
            "each trial pays the measured start-up once; the trials of a wave start together"
            + ("" if startup else "; not measured: counted 0"),
            "a checkpoint every epoch (checkpoint_every=1: an upper bound where checkpoints "
            "are rarer), saved in the training loop; packed trials save theirs side by side"
            + ("" if checkpoint else "; not measured: counted 0"),
            "no early stopping (ASHA would stop some trials sooner); no Ray overhead",
        ],
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="auto: CUDA when a GPU is visible")
    p.add_argument("--tiny", action="store_true",
                   help="32 px, encoder_stages 1, 24 tiles, 1-2 packed trials: the rehearsal")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON lines here")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="seconds the whole check may take (420: within 8 minutes)")
    p.add_argument("--data", default=None,
                   help="dataset root (Kaggle layout; default: the embedded synthetic tiles)")
    p.add_argument("--max-tiles", type=int, default=None,
                   help="cap on the tiles used (default: all; --tiny: 24)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.budget_s > 0:
        raise ConfigError(f"invalid --budget-s {args.budget_s}: expected seconds > 0")
    if args.max_tiles is not None and args.max_tiles < 4:
        raise ConfigError(f"invalid --max-tiles {args.max_tiles}: expected an integer >= 4")
    data = _dataset(args.data)
    sizes = dict(SIZES["tiny" if args.tiny else "full"])
    if args.max_tiles is not None:
        sizes["max_tiles"] = args.max_tiles
    lines = JsonLines(args.out)
    try:
        return _run(args, data, sizes, lines)
    finally:
        lines.close()


def _dataset(data: str | None) -> str | None:
    if data is None:
        return None
    from forest_seg.data import find_dataset_root

    return str(find_dataset_root(data).resolve())


def _run(args: argparse.Namespace, data: str | None, sizes: dict, lines: JsonLines) -> int:
    budget = Budget(args.budget_s)
    env: dict = {}

    def environment() -> None:
        stream_worker(["environment", "--device", args.device], WORKER_MIN_S,
                      lambda line: env.update(lines.write(**line)))

    guarded(lines, "environment", environment)
    if args.device == "cuda" and env.get("cuda_available") is False:
        raise ConfigError("invalid --device cuda: no CUDA GPU is visible to this process")
    device = args.device if args.device != "auto" else (
        "cuda" if env.get("cuda_available") else "cpu")
    cfg = TrainConfig(data=data, image_size=sizes["image_size"], max_tiles=sizes["max_tiles"],
                      batch_size=sizes["batch_size"], encoder_stages=sizes["encoder_stages"],
                      points=50, lr=1e-4, epochs=STUDY_EPOCHS, pretrained="none",
                      device=device, seed=0)
    lines.write("settings", budget_s=args.budget_s, tiny=args.tiny, config=cfg.to_dict(),
                pack_trials=list(sizes["pack"]), pack_seconds=sizes["pack_seconds"])
    check = GpuCheck(cfg, sizes, lines, budget, env.get("cpus") or 1)
    for section, action in (("precision", check.precision), ("startup", check.startup)):
        if budget.left() < RESERVE_S + 10:
            lines.write(section, skipped=f"{budget.left():.0f} s of the budget left")
            continue
        guarded(lines, section, action)
    if device == "cuda":
        mps_binary = shutil.which(MPS_CONTROL)
        check.packed(mps_binary, f"{MPS_CONTROL} not found on PATH")
    else:
        check.packed(None, "CUDA MPS needs a CUDA device")
    guarded(lines, "projection",
            lambda: lines.write("projection", **study_projection(check.results)))
    failed = sorted({r["section"] for r in lines.records if "error" in r})
    skipped = sorted({r["section"] for r in lines.records if "skipped" in r})
    lines.write("done", failed=failed, skipped=skipped, budget_left_s=budget.left())
    return 1 if failed else 0


# ------------------------------------------------ the GPU part of ``python -m bench``
def precision_throughput(cfg: TrainConfig, device: str, epochs: int = 3) -> dict[str, float]:
    """Images/s of ``train_epoch`` over ``epochs`` (after one warm-up epoch) in fp32 and in
    bf16 autocast + channels_last, in this process (:mod:`bench.gpu_steps`)."""
    import torch

    from forest_seg.batches import prepare_trial_data

    from .gpu_steps import TimedModel, time_training

    data, dev = prepare_trial_data(cfg), torch.device(device)
    return {variant: time_training(TimedModel.build(cfg, variant, dev), data, epochs,
                                   math.inf)["images_per_s"]
            for variant in ("fp32", "bf16_cl")}


def packed_throughput(cfg: TrainConfig, device: str, trials: int, seconds: float) -> float:
    """Aggregate images/s of ``trials`` processes training at once on one device (the
    config's precision), each for ``seconds`` after a warm-up epoch."""
    from forest_seg.train import available_cpus

    threads = max(1, available_cpus() // trials)
    args = ["trial", "--config", json.dumps(cfg.to_dict()), "--device", device, "--wait",
            "--seconds", str(seconds), "--threads", str(threads)]
    return packed_run(args, trials, 600 + 4 * seconds)["images_per_s"]


def study_minutes(images_per_s: float) -> float:
    """Projected minutes of the report's full study (one seed) at an aggregate training
    throughput, validation counted at ``VAL_COST`` of a training image."""
    images = STUDY_RUNS * STUDY_EPOCHS * (STUDY_TRAIN + VAL_COST * STUDY_VAL)
    return images / images_per_s / 60 if images_per_s > 0 else float("nan")


if __name__ == "__main__":
    sys.exit(run_cli(main))
