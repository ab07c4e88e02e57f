"""The command-line flags every sweep driver shares, turned into typed values: a
:class:`~forest_seg.sweep.Launch`, the scheduler and the base TrainConfig of a
:class:`~forest_seg.sweep.Study`. The drivers (``sweeps/*.py``) add their search flags."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import TrainConfig, add_config_arguments, config_from_args
from ..errors import ConfigError
from .config_file import add_config_flag, sweep_settings
from .presets import PRESETS, auto_preset
from .study import Asha, Launch
from .tracking import TRACKERS

# Fixed flags that take several values: the first is every trial's value, and grid.py adds
# trials for the others (compared like points and lr); other drivers accept one value only.
MULTI_VALUED = ("head", "encoder_stages")
# Fields only a driver sets, per trial, so never a flag (grid.py --budget-hours records each
# trial's budget in budget_hours)
BY_DRIVER = ("budget_hours",)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags every driver shares; the driver adds its search-space flags."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    run = parser.add_argument_group("sweep")
    add_config_flag(run)
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
    run.add_argument("--trust-storage", action="store_true",
                     help="let --resume load an experiment folder owned by another user "
                          "(resuming unpickles Ray's state from it: trust who wrote it)")
    run.add_argument("--address", default=None,
                     help="Ray cluster to join (e.g. auto); default: a local Ray on 127.0.0.1")
    run.add_argument("--tracking", choices=TRACKERS, default="none",
                     help="log every trial to MLflow or W&B (optional extras: pip install "
                          "'forest-seg-sweeps[mlflow]' / '[wandb]')")
    run.add_argument("--mlflow-uri", default=None,
                     help="--tracking mlflow: the tracking server or folder (default ./mlruns)")
    run.add_argument("--verbose", action="store_true",
                     help="also print Ray Tune's status tables and per-trial config boxes")
    run.add_argument("--wait-for-nodes", action="store_true",
                     help="skip the resource check (autoscaling clusters add nodes on demand)")
    fixed = parser.add_argument_group("fixed trial config (TrainConfig fields)")
    add_config_arguments(fixed, [n for n in TrainConfig.field_names()
                                 if n not in TrainConfig.swept_fields() + MULTI_VALUED + BY_DRIVER])
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


def launch_from_args(args: argparse.Namespace, **defaults: Any) -> Launch:
    """The Launch the flags describe, carrying them all as the settings its experiment's
    sweep.json records; ``defaults`` fill flags left unset (None)."""
    names = ("address", "cpus_per_trial", "gpus_per_trial", "max_concurrent", "max_failures",
             "storage_path", "name", "resume", "trust_storage", "wait_for_nodes", "tracking",
             "mlflow_uri")
    values = {n: getattr(args, n) for n in names}
    values.update({k: v for k, v in defaults.items() if values.get(k) is None})
    return Launch(**values, settings=sweep_settings(args),
                  verbose=2 if getattr(args, "verbose", False) else 0)


def scheduler_from_args(args: argparse.Namespace) -> Asha | None:
    """``--scheduler asha`` (with ``--grace-period``, ``--reduction-factor``) or None (FIFO)."""
    if args.scheduler == "fifo":
        return None
    return Asha(grace_period=args.grace_period, reduction_factor=args.reduction_factor)


def preset_name(args: argparse.Namespace, nodes: list[dict[str, float]]) -> str:
    """``smoke`` with --smoke-test, else --preset, with ``auto`` picked by the hardware."""
    if args.smoke_test:
        return "smoke"
    return auto_preset(nodes) if args.preset == "auto" else args.preset


def base_config(args: argparse.Namespace, nodes: list[dict[str, float]], driver: str,
                several: bool = False) -> TrainConfig:
    """The preset's defaults overridden by the fixed flags given (printed with the preset).

    A multi-valued flag (:data:`MULTI_VALUED`) gives its first value; a driver that cannot
    compare several (``several=False``) refuses more than one.
    """
    preset = preset_name(args, nodes)
    names = [n for n in TrainConfig.field_names()
             if n not in TrainConfig.swept_fields() + BY_DRIVER]
    given = config_from_args(args, names, PRESETS[preset])
    for name in MULTI_VALUED:
        values = multi_values(args, name)
        if len(values) > 1 and not several:
            raise ConfigError(f"--{name.replace('_', '-')} takes one value in {driver}; "
                              "compare several with sweeps/grid.py")
        if values:
            given[name] = values[0]
    print(f"{driver}: preset {preset}", flush=True)
    return TrainConfig.from_dict(given)
