"""The sweep driver's process never imports torch: its trials' workers do.

On a 2-core machine the driver's own import of torch (1-2 s of CPU) would compete with the
workers' imports while the first trials wait for them (:mod:`.local_ray`). Two things would
import it otherwise:

- the trial function: Ray Tune gets :func:`trainable`, which imports
  :func:`forest_seg.train.trainable` (the Tune adapter around ``fit``) only when a trial runs,
  in the trial's worker;
- tensorboardX, whose writer imports torch, when present, only to accept torch tensors; Ray
  Tune's TensorBoard logger writes floats, so :func:`import_tensorboardx` imports it with torch
  hidden when this process has not imported torch yet.

``tests/test_sweeps.py::test_grid_smoke_test_writes_results_and_history`` fails when a
change makes the driver import torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


def trainable(config: dict[str, Any]) -> None:
    """One trial: :func:`forest_seg.train.trainable` on ``config``."""
    from ..train import trainable as train_trial

    train_trial(config)


def import_tensorboardx() -> None:
    """Import tensorboardX (if installed) for Ray Tune's TensorBoard logger, with torch
    hidden from it unless this process imported torch already."""
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        return
    sys.modules["torch"] = None  # ``import torch`` raises ImportError while this is set
    try:
        importlib.import_module("tensorboardX")
    except ImportError:
        pass  # Ray Tune then logs no TensorBoard files, as it would anyway
    finally:
        del sys.modules["torch"]
