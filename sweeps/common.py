"""Machinery shared by the sweep drivers: flags, presets, Ray start-up, resource checks, the
live results files and the run itself. Search spaces stay in the drivers (grid.py, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from forest_seg.config import TrainConfig, add_config_arguments, config_from_args
from forest_seg.data import resolve_data_root
from forest_seg.errors import ConfigError
from forest_seg.results import HISTORY_FILE, RESULTS_FILE

# Fields a driver sweeps; every other TrainConfig field is a fixed flag of the driver.
SWEPT_FIELDS = ("points", "lr", "point_strategy", "seed")
# Fixed flags that take several values: the first is every trial's value, and grid.py adds
# trials for the others (compared like points and lr); other drivers accept one value only.
MULTI_VALUED = ("head", "encoder_stages")
# Every preset validates on whole scenes held out of training (split="scene"): a random split
# puts tiles of the same scene on both sides. --split random is the report's protocol.
PRESETS: dict[str, dict[str, Any]] = {
    # The report's scale, for GPUs: full ResNet50, ImageNet weights, 256 px, 10 epochs.
    "paper": {"image_size": 256, "batch_size": 16, "epochs": 10, "encoder_stages": 4,
              "pretrained": "imagenet", "split": "scene"},
    # Finishes the default grid within minutes on a 2-core CPU: a ResNet50 truncated after
    # its second stage, 48 px tiles, 240 tiles, 6 epochs of batch 8, no ImageNet download.
    "cpu": {"image_size": 48, "batch_size": 8, "epochs": 6, "encoder_stages": 2,
            "max_tiles": 240, "pretrained": "none", "device": "cpu", "split": "scene"},
    # --smoke-test: a minute on a CPU; used by the tests.
    "smoke": {"image_size": 32, "batch_size": 8, "epochs": 2, "encoder_stages": 1,
              "max_tiles": 24, "pretrained": "none", "device": "cpu", "split": "scene"},
}
METRIC, MODE = "val_miou", "max"


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags every driver shares; the driver adds its search-space flags."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    run = parser.add_argument_group("sweep")
    run.add_argument("--preset", choices=("auto", "cpu", "paper"), default="auto",
                     help="fixed-config defaults: paper = the report's scale (GPU); cpu = "
                          "minutes on a laptop; auto (default) picks by the hardware found")
    run.add_argument("--smoke-test", action="store_true",
                     help="a tiny sweep (a few trials, tiny images, 2 epochs) for checks")
    run.add_argument("--scheduler", choices=("asha", "fifo"), default="asha")
    run.add_argument("--grace-period", type=int, default=None,
                     help="ASHA: epochs before a trial can be stopped (default: a third of "
                          "the epochs, rounded up)")
    run.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA: halving rate")
    run.add_argument("--cpus-per-trial", type=float, default=None,
                     help="default: 1 on CPU-only clusters, 2 with GPUs")
    run.add_argument("--gpus-per-trial", type=float, default=None,
                     help="fractions pack trials on one GPU (0.25 = 4 per GPU); default: 1 "
                          "when the cluster has GPUs, else 0")
    run.add_argument("--max-concurrent", type=int, default=None, help="default: as resources allow")
    run.add_argument("--max-failures", type=int, default=2,
                     help="retries of a trial whose worker died, from its last checkpoint")
    run.add_argument("--storage-path", default="./runs", help="local folder or s3://... URI")
    run.add_argument("--name", default=None, help="experiment name (default: timestamped)")
    run.add_argument("--resume", action="store_true",
                     help="continue the experiment --name (default: the newest one)")
    run.add_argument("--address", default=None,
                     help="Ray cluster to join (e.g. auto); default: a local Ray on 127.0.0.1")
    run.add_argument("--wait-for-nodes", action="store_true",
                     help="skip the resource check (autoscaling clusters add nodes on demand)")
    fixed = parser.add_argument_group("fixed trial config (TrainConfig fields)")
    add_config_arguments(fixed, [n for n in TrainConfig.field_names()
                                 if n not in SWEPT_FIELDS + MULTI_VALUED])
    fixed.add_argument("--head", "--heads", dest="head", nargs="+", default=None,
                       help="segmentation head(s): linear (the report's) or unet; default "
                            "linear. grid.py compares several at --base-points/--base-lr")
    fixed.add_argument("--encoder-stages", dest="encoder_stages", nargs="+", default=None,
                       help="ResNet50 stages kept (1-4); default: the preset's. grid.py "
                            "compares several at --base-points/--base-lr")
    return parser


def multi_values(args: argparse.Namespace, name: str) -> list[str]:
    """The values given to a multi-valued fixed flag (:data:`MULTI_VALUED`); [] when unset."""
    return list(getattr(args, name, None) or [])


def start_ray(address: str | None) -> None:
    """Join ``address``, or start a local Ray whose addresses stay on 127.0.0.1."""
    import ray

    if address is None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False,
                 object_store_memory=256 * 1024**2, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)


def cluster_nodes() -> list[dict[str, float]]:
    """CPU and GPU counts of each alive node of the connected Ray cluster."""
    import ray

    return [{"CPU": n["Resources"].get("CPU", 0.0), "GPU": n["Resources"].get("GPU", 0.0)}
            for n in ray.nodes() if n.get("Alive")]


def choose_preset(args: argparse.Namespace, nodes: list[dict[str, float]]) -> str:
    if args.smoke_test:
        return "smoke"
    if args.preset != "auto":
        return args.preset
    return "paper" if any(n["GPU"] > 0 for n in nodes) else "cpu"


def trial_resources(args: argparse.Namespace, nodes: list[dict[str, float]]) -> dict[str, float]:
    """CPUs and GPUs per trial; an impossible request is an immediate ConfigError."""
    has_gpu = any(n["GPU"] > 0 for n in nodes)
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else float(has_gpu)
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else (2.0 if gpus else 1.0)
    if cpus < 0 or gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise ConfigError(f"invalid --cpus-per-trial {cpus} / --gpus-per-trial {gpus}: expected "
                          ">= 0, and a GPU fraction only below 1")
    fits = any(n["CPU"] >= cpus and n["GPU"] >= gpus for n in nodes)
    if not fits and not args.wait_for_nodes:
        described = ", ".join(f"{n['CPU']:g} CPU/{n['GPU']:g} GPU" for n in nodes) or "none"
        raise ConfigError(
            f"no node of the Ray cluster can run a trial of --cpus-per-trial {cpus:g} "
            f"--gpus-per-trial {gpus:g} (nodes: {described}); lower the request, or pass "
            "--wait-for-nodes on an autoscaling cluster"
        )
    return {"cpu": cpus, "gpu": gpus}


def fixed_config(args: argparse.Namespace, preset: str) -> dict[str, Any]:
    """The preset's defaults overridden by the fixed flags given; validated, data resolved.

    Resolving ``data`` here generates the embedded synthetic dataset once, in the driver,
    before any trial starts, and gives the trials an absolute path.
    """
    names = [n for n in TrainConfig.field_names() if n not in SWEPT_FIELDS]
    given = config_from_args(args, names, PRESETS[preset])
    for name in MULTI_VALUED:  # the first value is the base; grid.py adds the others
        if isinstance(given.get(name), list):
            given[name] = given[name][0]
    values = TrainConfig.from_dict(given).to_dict()
    values["data"] = str(resolve_data_root(values["data"]).resolve())
    if values["val_data"] is not None:
        values["val_data"] = str(resolve_data_root(values["val_data"]).resolve())
    return {name: values[name] for name in names}


def experiment_dir(args: argparse.Namespace, driver: str) -> tuple[str, str]:
    """(storage path, experiment name); ``--resume`` without ``--name`` takes the newest."""
    storage = args.storage_path
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    if args.name:
        return storage, args.name
    if args.resume:
        if "://" in storage:
            raise ConfigError(f"--resume on {storage} needs --name (the experiment to resume)")
        found = sorted(Path(storage).glob(f"{driver}-*/tuner.pkl"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"--resume: no {driver} experiment to resume under {storage}")
        return storage, found[-1].parent.name
    return storage, default_name(driver)


def default_name(driver: str) -> str:
    return f"{driver}-{time.strftime('%Y%m%d-%H%M%S')}"


def print_effective(driver: str, args: argparse.Namespace, **extra: Any) -> None:
    shown = {k: v for k, v in vars(args).items() if v is not None and v is not False}
    print(f"{driver}: " + json.dumps({**shown, **extra}, default=str), flush=True)


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
    from forest_seg.analysis import load_experiments, summarize

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


def make_scheduler(args: argparse.Namespace, epochs: int):
    """ASHA on val mIoU (``--grace-period``, ``--reduction-factor``) or FIFO.

    Validation mIoU after one epoch is noisy, so by default ASHA lets every trial run a third
    of its epochs before it may stop it.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if args.scheduler == "fifo":
        return FIFOScheduler()
    grace = args.grace_period or max(1, math.ceil(epochs / 3))
    if not 1 <= grace <= epochs or args.reduction_factor <= 1:
        raise ConfigError(f"invalid --grace-period {grace} / --reduction-factor "
                          f"{args.reduction_factor}: expected 1 <= grace <= epochs ({epochs}) "
                          "and a reduction factor > 1")
    return ASHAScheduler(max_t=epochs, grace_period=grace, reduction_factor=args.reduction_factor)


def run_sweep(args, driver: str, points: list[dict[str, Any]] | None = None,
              space: dict[str, Any] | None = None, search_alg=None,
              num_samples: int | None = None, scheduler=None,
              keep_checkpoints: int | None = 2) -> pd.DataFrame | None:
    """Run (or ``--resume``) a sweep; returns the results frame written to results.csv
    (None when the experiment lives on a remote URI).

    Either ``points``, explicit trial configs (a grid), or ``space``, Ray Tune distributions
    over swept fields that ``search_alg`` samples ``num_samples`` times. ``scheduler``
    replaces the ``--scheduler`` choice (e.g. Population Based Training).
    ``keep_checkpoints`` per trial (None = all: PBT restores other trials' older ones).
    """
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from forest_seg.train import trainable
    from results_files import ResultsFiles

    # Snapshot the experiment state every second (Ray's default: every >= 10 s), so a driver
    # killed right after a trial finished does not rerun that trial on --resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    start_ray(args.address)
    nodes = cluster_nodes()
    preset = choose_preset(args, nodes)
    resources = trial_resources(args, nodes)
    fixed = fixed_config(args, preset)
    for name in MULTI_VALUED if points is None else ():
        if len(multi_values(args, name)) > 1:
            raise ConfigError(f"--{name.replace('_', '-')} takes one value in {driver}; "
                              "compare several with sweeps/grid.py")
    storage, name = experiment_dir(args, driver)
    constants = {k: v for k, v in (space or {}).items() if not hasattr(v, "sample")}
    for point in points or [{}]:
        TrainConfig.from_dict({**fixed, **constants, **point})  # fail before any trial starts
    print_effective(driver, args, preset=preset, resources=resources, experiment=name,
                    fixed_config=fixed)
    path = f"{storage}/{name}"
    runnable = tune.with_resources(trainable, resources)
    if args.resume:
        if not tune.Tuner.can_restore(path):
            raise ConfigError(f"--resume: {path} holds no Ray Tune experiment to resume")
        tuner = tune.Tuner.restore(path, runnable, resume_unfinished=True, resume_errored=True)
    else:
        if points is not None:
            search_alg = BasicVariantGenerator(points_to_evaluate=points)
            num_samples = len(points)
        scheduler = scheduler or make_scheduler(args, fixed["epochs"])
        tuner = tune.Tuner(
            runnable,
            param_space={**fixed, **{k: TrainConfig.__dataclass_fields__[k].default
                                     for k in SWEPT_FIELDS}, **(space or {})},
            tune_config=tune.TuneConfig(
                metric=METRIC, mode=MODE, scheduler=scheduler, search_alg=search_alg,
                num_samples=num_samples, max_concurrent_trials=args.max_concurrent,
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, verbose=1,
                failure_config=tune.FailureConfig(max_failures=args.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=keep_checkpoints),
                callbacks=[ResultsFiles(path)],
            ),
        )
    tuner.fit()
    if "://" in path:
        print(f"results: {path}/{RESULTS_FILE}  (per epoch: {path}/{HISTORY_FILE})")
        return None
    results = pd.read_csv(f"{path}/{RESULTS_FILE}")
    print(results_table(results))
    print("\nper configuration (final val mIoU over COMPLETED seeds, mean and 95% t-interval):")
    print(configuration_table(path))
    print(f"results: {path}/{RESULTS_FILE}  (per epoch: {path}/{HISTORY_FILE})")
    print(f"analysis: python sweeps/analyze.py {path}")
    return results
