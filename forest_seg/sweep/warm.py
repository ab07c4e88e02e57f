"""Work the sweep driver does once, before any trial starts, so that no trial pays for it."""

from __future__ import annotations

import os
from typing import Any

from .study import Study

WORKER_HOOK = "forest_seg.startup.import_trial_code"


def trial_worker_env() -> dict[str, Any]:
    """The runtime environment a local Ray is started with, so that the worker processes it
    starts ahead (one per CPU, while the driver still prepares) run the first trials: the
    environment variables Ray Tune gives every trial actor (Ray hands an actor only a worker
    started with the same environment) and a set-up hook that imports the trial code in each
    worker as it starts (:func:`forest_seg.startup.import_trial_code`). ``{}`` where Ray
    Tune's names for them moved: the trials then start their own workers, as without it."""
    try:
        from ray.tune.execution.class_cache import DEFAULT_ENV_VARS, ENV_VARS_TO_PROPAGATE
    except ImportError:
        return {}
    env = {**DEFAULT_ENV_VARS,
           **{name: os.environ[name] for name in ENV_VARS_TO_PROPAGATE if name in os.environ}}
    return {"env_vars": env, "worker_process_setup_hook": WORKER_HOOK}


def decode_tiles(study: Study) -> None:
    """Build the decoded-tile cache (:func:`forest_seg.data.load_tiles`) of every dataset and
    image size the study's trials use (a search: its base's), so the trials only memory-map
    it: without this the first wave of trials all decode the dataset at once, each into its
    own temporary copy. ``study.base.data`` must already be a resolved root
    (:func:`forest_seg.sweep.runner.resolve_data`). On a cluster this fills the driver node's
    cache; another node's trials decode once per node."""
    from ..data import load_tiles

    wanted = set()
    for cfg in study.trial_configs():
        wanted.add((cfg.data, cfg.image_size))
        if cfg.val_data is not None:
            wanted.add((cfg.val_data, cfg.image_size))
    for root, size in sorted(wanted):
        load_tiles(root, size)
