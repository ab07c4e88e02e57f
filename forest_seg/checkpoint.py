"""Checkpoint files: a plain dict of tensors and numbers, safe to load.

A checkpoint holds ``format``, ``config`` (the TrainConfig as a dict), ``epoch`` (epochs done),
``model`` and ``optimizer`` state dicts, ``rng`` (torch RNG states), ``history`` (one metrics dict
per epoch) and ``pretrained_source``. It is read with ``torch.load(weights_only=True)``, so
loading a file never executes code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .errors import CheckpointError

CHECKPOINT_FORMAT = "forest-seg-checkpoint/1"
CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (with the format tag added) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({**state, "format": CHECKPOINT_FORMAT}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    ``path`` may be the file or the folder holding ``checkpoint.pt``. Raises CheckpointError
    naming the file when it is missing, not a torch file, would need code execution to load,
    or is not one of ours.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    with open(path, "rb") as stream:
        return read_checkpoint(stream, str(path))


def read_checkpoint(stream: BinaryIO, name: str) -> dict[str, Any]:
    """Read a checkpoint from an open binary stream; ``name`` names it in errors."""
    try:
        state = torch.load(stream, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{name} is not a forest-seg checkpoint (cannot be read safely: {reason})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{name} is not a forest-seg checkpoint (expected format {CHECKPOINT_FORMAT!r})"
        )
    return state
