"""``python -m bench``: measure the sweep system's overheads in one run.

    python -m bench --quick          # a few minutes on 2 CPU cores
    python -m bench                  # larger sizes, steadier figures
    python -m bench --quick --skip sweep memory efficiency   # the throughput ratio only
    python -m bench --only efficiency   # the default grid's sweep efficiency alone

Prints the machine, a table of measurements against their goals, notes on any goal missed,
and as its last line ``tune/bare throughput ratio: X.XX`` (with ``--only`` and no
throughput part: ``sweep efficiency: X.XX`` when that part ran).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

from forest_seg.cli import run_cli
from forest_seg.data import resolve_data_root
from forest_seg.errors import ConfigError

from .report import Row, fmt, format_table, last_line, machine_lines
from .runs import REPO_ROOT
from .sections import (
    BenchSettings,
    cache_section,
    efficiency_section,
    gpu_section,
    memory_section,
    sweep_section,
    throughput_section,
)

PARTS = ("data", "memory", "sweep", "efficiency", "gpu")
REAL_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "forest-aerial-sample"
QUICK = {"image_size": 64, "max_tiles": 240, "encoder_stages": 2, "epochs": 6,
         "bare_after": 2, "cache_items": 128, "sweep_tiles": 64, "sweep_epochs": 4,
         "sweep_seeds": 1, "gpu_tiles": 256, "pack_seconds": 10.0, "quiet_wait": 60.0,
         "efficiency_seeds": 1}
FULL = {"image_size": 128, "max_tiles": 320, "encoder_stages": 2, "epochs": 8,
        "bare_after": 3, "cache_items": None, "sweep_tiles": 128, "sweep_epochs": 6,
        "sweep_seeds": 2, "gpu_tiles": 493, "pack_seconds": 30.0, "quiet_wait": 180.0,
         "efficiency_seeds": None}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line (via run_cli), not usage + message
        raise ConfigError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench",
                description="Tune vs bare throughput, data, memory, sweep and GPU figures.")
    p.add_argument("--quick", action="store_true", help="tiny sizes: minutes on 2 CPU cores")
    p.add_argument("--data", default=None,
                   help="dataset root (default: ../shared/data/forest-aerial-sample when "
                        "present, else the embedded synthetic dataset)")
    p.add_argument("--cpus", type=int, default=None,
                   help="CPUs of the measured trial = torch threads of the bare loop "
                        "(default: all this process may use)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device of the Tune-vs-bare trial (auto: CUDA when present)")
    p.add_argument("--image-size", type=int, help="px of the throughput trial (quick 64, 128)")
    p.add_argument("--max-tiles", type=int, help="tiles of the throughput trial (240, 320)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--encoder-stages", type=int, help="ResNet50 stages kept (2)")
    p.add_argument("--epochs", type=int, help="epochs of the throughput trial, the first is "
                                              "warm-up (6, 8)")
    p.add_argument("--cache-size", type=int, default=256,
                   help="px of the cache and memory measurements (256)")
    p.add_argument("--cache-items", type=int, help="items timed per path (128; all)")
    p.add_argument("--sweep-epochs", type=int, help="epochs of the ASHA/FIFO grid (4, 6)")
    p.add_argument("--sweep-seeds", type=int, help="seeds of the ASHA/FIFO grid (1, 2)")
    p.add_argument("--sweep-tiles", type=int, help="tiles of the ASHA/FIFO grid (64, 128)")
    p.add_argument("--efficiency-seeds", type=int,
                   help="seeds of the default grid whose sweep efficiency is measured (quick 1; "
                        "full: the grid's default, 3)")
    p.add_argument("--skip", nargs="+", choices=PARTS, default=[],
                   help="parts to leave out (the throughput ratio always runs)")
    p.add_argument("--only", nargs="+", choices=("throughput", *PARTS), default=None,
                   help="run only these parts (e.g. --only efficiency)")
    p.add_argument("--ray-worker-niceness", type=int, default=None,
                   help="nice level of the Tune run's Ray workers (RAY_worker_niceness; "
                        "Ray's default is 15, which yields to any other load on the node)")
    p.add_argument("--quiet-wait", type=float, default=None,
                   help="seconds to wait for other processes to leave the cores alone before "
                        "each timed block, and to add bare epochs until 3 are quiet (60; 180)")
    p.add_argument("--timeout", type=float, default=1200.0,
                   help="seconds allowed to each sweeps/grid.py run")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where the Tune experiments go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep --work-dir's experiments")
    return p


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """The effective sizes: --quick or full defaults overridden by the flags given."""
    base = QUICK if args.quick else FULL
    pick = {k: (getattr(args, k, None) if getattr(args, k, None) is not None else v)
            for k, v in base.items()}
    from forest_seg.train import available_cpus

    cpus = args.cpus if args.cpus is not None else available_cpus()
    checks = [("--cpus", cpus, 1), ("--image-size", pick["image_size"], 8),
              ("--max-tiles", pick["max_tiles"], 4), ("--batch-size", args.batch_size, 2),
              ("--epochs", pick["epochs"], 2), ("--cache-size", args.cache_size, 8),
              ("--sweep-epochs", pick["sweep_epochs"], 2),
              ("--sweep-seeds", pick["sweep_seeds"], 1),
              ("--sweep-tiles", pick["sweep_tiles"], 4)]
    if pick["efficiency_seeds"] is not None:
        checks.append(("--efficiency-seeds", pick["efficiency_seeds"], 1))
    if pick["quiet_wait"] < 0:
        raise ConfigError(f"invalid --quiet-wait {pick['quiet_wait']}: expected seconds >= 0")
    if pick["cache_items"] is not None:
        checks.append(("--cache-items", pick["cache_items"], 1))
    for flag, value, least in checks:
        if value < least:
            raise ConfigError(f"invalid {flag} {value}: expected an integer >= {least}"
                              + (" (the first epoch is warm-up)" if flag == "--epochs" else ""))
    if not 1 <= pick["encoder_stages"] <= 4:
        raise ConfigError(f"invalid --encoder-stages {pick['encoder_stages']}: expected 1 to 4")
    if args.data is not None:
        data = str(resolve_data_root(args.data).resolve())
    elif (REAL_SAMPLE / "meta_data.csv").is_file():
        data = str(REAL_SAMPLE.resolve())
    else:
        data = str(resolve_data_root(None).resolve())
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("invalid --device cuda: no CUDA GPU is visible to this process")
    device = args.device if args.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    niceness = args.ray_worker_niceness
    if niceness is not None and not 0 <= niceness <= 19:
        raise ConfigError(f"invalid --ray-worker-niceness {niceness}: expected 0 to 19")
    return BenchSettings(data=data, cpus=cpus, device=device, batch_size=args.batch_size,
                         ray_worker_niceness=niceness,
                         cache_size=args.cache_size, timeout_s=args.timeout, **pick)


def parts_to_run(args: argparse.Namespace) -> list[str]:
    """The parts ``--only`` names, or all but ``--skip``'s (throughput always, then)."""
    if args.only is not None and args.skip:
        raise ConfigError("python -m bench: give --only or --skip, not both")
    if args.only is not None:
        return list(dict.fromkeys(args.only))
    return ["throughput", *(p for p in PARTS if p not in args.skip)]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    parts = parts_to_run(args)
    print("bench: " + json.dumps({**vars(settings), "parts": parts}, default=str), flush=True)
    import torch

    device = (f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
              else "CPU only (no CUDA device)")
    for line in machine_lines(settings.cpus, device):
        print(line, flush=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="forest-seg-bench-"))
    rows: list[Row] = []
    notes: list[str] = []
    tune_bare = efficiency = math.nan
    try:
        if "memory" in parts:  # first: this process must not map the dataset yet
            _add(rows, notes, memory_section(settings))
        if "data" in parts:
            _add(rows, notes, cache_section(settings))
        if "throughput" in parts:
            throughput_rows, throughput_notes, tune_bare = throughput_section(settings, work)
            rows += throughput_rows
            notes += throughput_notes
        if "sweep" in parts:
            _add(rows, notes, sweep_section(settings, work))
        if "efficiency" in parts:
            efficiency_rows, efficiency_notes, efficiency = efficiency_section(settings, work)
            rows += efficiency_rows
            notes += efficiency_notes
        if "gpu" in parts:
            _add(rows, notes, gpu_section(settings))
    finally:
        if args.work_dir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(format_table(rows))
    if notes:
        print()
        print("\n".join(f"- {note}" for note in notes))
    if "throughput" in parts:
        if math.isnan(tune_bare):
            raise ConfigError("no throughput ratio: the bare loop measured no images")
        print(last_line(tune_bare), flush=True)
    elif "efficiency" in parts:
        print(f"sweep efficiency: {fmt(efficiency)}", flush=True)
    return 0


def _add(rows: list[Row], notes: list[str], section: tuple[list[Row], list[str]]) -> None:
    rows += section[0]
    notes += section[1]


if __name__ == "__main__":
    sys.exit(run_cli(main))
