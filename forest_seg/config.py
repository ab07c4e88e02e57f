"""TrainConfig: every hyperparameter of one trial, its field metadata and its command-line form.

The defaults are the original report's baseline: 256x256 inputs, batch 16, 10 epochs, Adam at
lr 1e-4, 50 points per image, focal gamma 2, an 80/20 random split. A config travels through
Ray Tune as a plain dict; :meth:`TrainConfig.from_dict` rebuilds and validates it.

Each field's metadata is the one source of truth other modules read:

- ``swept``: a field the sweep drivers vary per trial (``points``, ``lr``,
  ``point_strategy``, ``seed``); every other field is a fixed flag of a driver;
- ``execution``: a field that changes how a trial runs, not what it computes (``device``,
  ``num_workers``, ``threads``, ``checkpoint_every``, ``checkpoint_minutes``), so the analysis
  never treats it as a factor;
- ``choices``: the valid values; point strategies and lr schedules are read on first use
  from :mod:`forest_seg.strategy_registry` and :mod:`forest_seg.schedules`. Neither this
  module nor a config's validation imports torch, so a sweep driver never does: the trials'
  workers do, while the driver prepares.
"""

from __future__ import annotations

import argparse
import importlib
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import ConfigError

SPLITS = ("random", "scene")
OPTIMIZERS = ("adam", "adamw")
DEVICES = ("auto", "cpu", "cuda")
HEADS = ("linear", "unet")  # segmentation heads (forest_seg.model)
SEED_LIMIT = 2**32  # seeds lie in [0, 2**32) (numpy's legacy and most seeders' range)
Choices = Callable[[], tuple[str, ...]]


def _names_in(module: str, attribute: str) -> Choices:
    """The valid values held by ``forest_seg.<module>.<attribute>`` (a sequence, or a function
    returning one), imported when first asked."""
    def names() -> tuple[str, ...]:
        found = getattr(importlib.import_module(f"forest_seg.{module}"), attribute)
        return tuple(found() if callable(found) else found)

    return names


def _field(default: Any, *, swept: bool = False, execution: bool = False,
           choices: tuple[str, ...] | Choices | None = None) -> Any:
    return field(default=default,
                 metadata={"swept": swept, "execution": execution, "choices": choices})


@dataclass
class TrainConfig:
    """One trial's hyperparameters (see the field comments for units and choices)."""

    data: str | None = None  # dataset root (Kaggle layout); None = embedded synthetic dataset
    image_size: int = 256  # tiles are resized to image_size x image_size
    max_tiles: int | None = None  # seeded subset of the tiles; None = all
    # "random" (the report) or "scene" (no scene on both sides)
    split: str = _field("random", choices=SPLITS)
    val_fraction: float = 0.2
    val_data: str | None = None  # validation dataset root: all of data trains, no split
    # cap on the training side: its first n tiles in a seeded order, nested across caps for one
    # seed (what a labelling budget buys; forest_seg.labelling_cost); None = all
    max_train_tiles: int | None = None
    # the labelling budget (hours) that bought those tiles in a fixed-budget study: recorded so
    # the analysis compares the labellings of one budget; training does not read it
    budget_hours: float | None = None
    # training tiles an epoch visits: whole reshuffled passes over the training side one
    # after another, cut at this count (equal steps per epoch for training sets of any size,
    # as a fixed-budget study needs); None = one pass
    epoch_tiles: int | None = None
    # labelled points per training image; 0 = dense masks (upper bound)
    points: int = _field(50, swept=True)
    # balanced, uniform, forest (the report's), spread, boundary, ...
    point_strategy: str = _field("balanced", swept=True,
                                 choices=_names_in("strategy_registry", "point_strategies"))
    lr: float = _field(1e-4, swept=True)
    # "constant" (the report), "cosine", "onecycle", "plateau"
    lr_schedule: str = _field("constant", choices=_names_in("schedules", "LR_SCHEDULES"))
    warmup_epochs: int = 0  # linear lr warm-up epochs before the schedule
    optimizer: str = _field("adam", choices=OPTIMIZERS)  # "adam" or "adamw"
    weight_decay: float = 0.0
    batch_size: int = 16
    epochs: int = 10
    gamma: float = 2.0  # focal term; 0 = plain partial cross-entropy
    alpha: float | None = None  # forest weight in [0, 1]; None = unweighted
    # "linear" (the report's 1x1 conv) or "unet"
    head: str = _field("linear", choices=HEADS)
    encoder_stages: int = 4  # ResNet50 stages kept (1-4); fewer = a truncated, faster net
    pretrained: str = "imagenet"  # "imagenet", "none" or a path to a weights file
    seed: int = _field(0, swept=True)
    # "auto" (CUDA when present), "cpu" or "cuda"
    device: str = _field("auto", execution=True, choices=DEVICES)
    # background threads preparing the next batches; 0 = inline
    num_workers: int = _field(0, execution=True)
    # torch CPU threads; None = the CPUs this process was given
    threads: int | None = _field(None, execution=True)
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # channels_last memory format on CUDA (ignored on CPU)
    # epochs a scheduler needs checkpointed (every Nth, e.g. PBT's perturbation interval);
    # None = none beyond the policy of forest_seg.checkpoint_policy (last epoch, by time)
    checkpoint_every: int | None = _field(None, execution=True)
    # at most this many minutes of training between two checkpoints (0 = every epoch)
    checkpoint_minutes: float = _field(5.0, execution=True)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def swept_fields(cls) -> tuple[str, ...]:
        """The fields sweeps vary per trial (metadata ``swept``)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("swept"))

    @classmethod
    def execution_fields(cls) -> tuple[str, ...]:
        """The fields that change how a trial runs, not its results (metadata ``execution``)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("execution"))

    @classmethod
    def choices(cls, name: str) -> tuple[str, ...] | None:
        """The valid values of field ``name``, or None when it is not a choice."""
        found = cls.__dataclass_fields__[name].metadata.get("choices")
        return found() if callable(found) else found

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a plain dict, rejecting unknown keys and invalid values."""
        valid = cls.field_names()
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}"
            )
        hints = typing.get_type_hints(cls)
        coerced = {name: _coerce(name, value, hints[name]) for name, value in values.items()}
        return cls(**coerced)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        for name, hint in typing.get_type_hints(type(self)).items():
            setattr(self, name, _coerce(name, getattr(self, name), hint))
        for name in self.field_names():
            valid = self.choices(name)
            value = getattr(self, name)
            _check(valid is None or value in valid, name, value, f"one of {', '.join(valid or ())}")
        _check(self.image_size >= 8, "image_size", self.image_size, "an integer >= 8")
        _check(
            self.max_tiles is None or self.max_tiles >= 2,
            "max_tiles", self.max_tiles, "an integer >= 2 or none",
        )
        _check(
            self.max_train_tiles is None or self.max_train_tiles >= 1,
            "max_train_tiles", self.max_train_tiles, "an integer >= 1 or none",
        )
        _check(
            self.budget_hours is None or self.budget_hours > 0,
            "budget_hours", self.budget_hours, "a number of hours > 0 or none",
        )
        _check(
            self.epoch_tiles is None or self.epoch_tiles >= 2,
            "epoch_tiles", self.epoch_tiles, "an integer >= 2 or none",
        )
        _check(
            self.val_data is None or bool(self.val_data.strip()),
            "val_data", self.val_data, "a dataset folder or none",
        )
        _check(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "a number in (0, 1)")
        _check(self.points >= 0, "points", self.points, "an integer >= 0 (0 = dense masks)")
        _check(self.lr > 0, "lr", self.lr, "a number > 0")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        _check(self.batch_size >= 2, "batch_size", self.batch_size, "an integer >= 2")
        _check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _check(
            0 <= self.warmup_epochs < self.epochs,
            "warmup_epochs", self.warmup_epochs, "an integer >= 0 and below epochs",
        )
        _check(self.gamma >= 0, "gamma", self.gamma, "a number >= 0")
        _check(
            self.alpha is None or 0 <= self.alpha <= 1, "alpha", self.alpha, "none or in [0, 1]"
        )
        _check(1 <= self.encoder_stages <= 4, "encoder_stages", self.encoder_stages, "1 to 4")
        _check(bool(self.pretrained), "pretrained", self.pretrained, "imagenet, none or a path")
        _check(0 <= self.seed < SEED_LIMIT, "seed", self.seed, "an integer in [0, 2**32)")
        _check(self.num_workers >= 0, "num_workers", self.num_workers, "an integer >= 0")
        _check(
            self.threads is None or self.threads >= 1, "threads", self.threads, ">= 1 or none"
        )
        _check(self.checkpoint_every is None or self.checkpoint_every >= 1, "checkpoint_every",
               self.checkpoint_every, "an integer >= 1 or none")
        _check(self.checkpoint_minutes >= 0, "checkpoint_minutes", self.checkpoint_minutes,
               "minutes >= 0")


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"invalid {name}={value!r}: expected {expected}")


def _base_type(hint: Any) -> tuple[type, bool]:
    """(the non-None type, whether None is allowed) of a field's type hint."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return non_none[0], len(non_none) < len(args)
    return hint, False


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert ``value`` (native, numpy scalar or CLI string) to the field's type."""
    kind, optional = _base_type(hint)
    if value is None or (optional and isinstance(value, str) and value.lower() == "none"):
        if optional:
            return None
        raise ConfigError(f"invalid {name}=None: expected {_TYPE_WORDS[kind]}")
    try:
        if kind is bool:
            return _to_bool(value)
        if kind is int:
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid {name}={value!r}: expected {_TYPE_WORDS[kind]}") from None


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    return bool(value)


def add_config_arguments(
    parser: argparse.ArgumentParser, names: list[str] | None = None, defaults: dict | None = None
) -> None:
    """Add a ``--field-name`` flag for each config field in ``names`` (default: all).

    Values stay strings (or None when not given) and are validated by ``TrainConfig.from_dict``,
    so the CLI and Ray Tune share one set of rules. ``defaults`` overrides the shown defaults.
    """
    hints = typing.get_type_hints(TrainConfig)
    base = TrainConfig.__dataclass_fields__
    defaults = defaults or {}
    for name in names or TrainConfig.field_names():
        kind, optional = _base_type(hints[name])
        default = defaults.get(name, base[name].default)
        flag = "--" + name.replace("_", "-")
        help_text = f"default: {default}" + (" (none allowed)" if optional else "")
        if kind is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=kind.__name__.upper(),
                                help=help_text)


def config_from_args(
    args: argparse.Namespace, names: list[str] | None = None, defaults: dict | None = None
) -> dict[str, Any]:
    """The config dict given on the command line: ``defaults`` overridden by the flags set."""
    values = dict(defaults or {})
    for name in names or TrainConfig.field_names():
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    return values
