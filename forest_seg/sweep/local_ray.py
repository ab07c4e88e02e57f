"""The local Ray a sweep starts on this machine: started with warm workers, stopped quickly.

- **Warm workers.** As it starts, Ray starts one worker process per CPU (its prestarted
  workers), and every worker it starts imports :data:`WORKER_PRELOAD` first (Ray's
  ``preload_python_modules``): the trial code (torch, torchvision, the model, the training
  loop) is imported while the driver still prepares the sweep. Each holds about 0.45 GB of
  its own memory once it has (torch, torchvision, Ray Tune): a machine with many more CPUs
  than concurrent trials keeps the others idle, ready for a trial that has to start again.
  Start Ray yourself before :func:`forest_seg.sweep.run` to choose otherwise (a connection
  that exists is used as it is).
- **The first trials land on them.** Ray hands an actor only a worker started with the
  actor's runtime environment, and it prestarts its workers with none. Ray Tune gives every
  trial actor one (a few environment variables, :func:`tune_actor_env`), so the first trials
  would wait for new processes to start and import torch. A local Ray's workers inherit the
  driver's environment, so :func:`local_trial_actors` puts those variables there, before
  Ray starts, and has Ray Tune create its trial actors with an empty runtime environment.
- **The driver's imports while Ray starts.** Ray's start takes a few seconds, most of them
  waiting for its processes, with a core to spare; the driver imports what it needs next
  (:data:`DRIVER_MODULES`: Ray Tune, the sweep's callbacks, pandas and scipy for the closing
  table) in a thread meanwhile, rather than while the workers import the trial code.
- **A quick stop.** :func:`stop_local_ray` stops Ray's autoscaler monitor before
  ``ray.shutdown()``, which stops it last: by then the GCS it reports its exit to is gone, and
  Ray waits a second for it before it kills it.

A joined cluster is left alone: its workers start from their own node's environment.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

WORKER_PRELOAD = "forest_seg.worker_preload"
# what the driver imports next: Ray Tune, the loggers Tune counts its callbacks against (its
# usage telemetry imports their modules, MLflow's with mlflow when that is installed), the
# sweep's callbacks and the analysis behind the closing table (pandas, scipy)
DRIVER_MODULES = ("ray.tune", "ray.air.integrations.mlflow", "ray.air.integrations.wandb",
                  "ray.air.integrations.comet", "ray.tune.logger.aim",
                  "forest_seg.sweep.callbacks", "forest_seg.sweep.progress",
                  "forest_seg.sweep.tracking", "forest_seg.analysis")
OBJECT_STORE_BYTES = 256 * 1024**2  # a sweep passes configs and results, not tensors


def _class_cache():
    """Ray Tune's module that builds the trial actor class and its runtime environment
    (``ray.tune.execution.class_cache``, not public API), or None where it moved."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return None
    if not all(hasattr(class_cache, name)
               for name in ("DEFAULT_ENV_VARS", "ENV_VARS_TO_PROPAGATE")):
        return None
    return class_cache


def tune_actor_env() -> dict[str, str]:
    """The environment variables Ray Tune gives its trial actors: its defaults and those of
    this process's environment it propagates ({} where Ray Tune's names for them moved)."""
    cache = _class_cache()
    if cache is None:
        return {}
    return {**cache.DEFAULT_ENV_VARS,
            **{name: os.environ[name] for name in cache.ENV_VARS_TO_PROPAGATE
               if name in os.environ}}


@contextmanager
def local_trial_actors() -> Iterator[bool]:
    """For the block, Ray Tune creates its trial actors with an empty runtime environment,
    and the variables it would give them (:func:`tune_actor_env`) are set in this process's
    environment instead. Yields whether it could (False where Ray Tune's names moved: the
    trials then start new workers, as by default). Enter it before starting the local Ray,
    whose workers inherit this environment; leaving restores both."""
    cache = _class_cache()
    if cache is None:
        yield False
        return
    added = {name: value for name, value in tune_actor_env().items() if name not in os.environ}
    os.environ.update(added)
    saved = cache.DEFAULT_ENV_VARS, cache.ENV_VARS_TO_PROPAGATE
    cache.DEFAULT_ENV_VARS, cache.ENV_VARS_TO_PROPAGATE = {}, frozenset()
    try:
        yield True
    finally:
        cache.DEFAULT_ENV_VARS, cache.ENV_VARS_TO_PROPAGATE = saved
        for name in added:
            os.environ.pop(name, None)


def init_options(num_cpus: int | None = None) -> dict[str, Any]:
    """``ray.init``'s arguments for a local Ray: addresses on 127.0.0.1, no dashboard, a
    small object store, one worker per CPU started with the raylet (Ray's
    ``enable_worker_prestart``; by default it waits for the driver to register, about a
    second later), each importing the trial code as it starts; ``num_cpus`` None = every
    CPU."""
    return {"address": "local", "_node_ip_address": "127.0.0.1", "include_dashboard": False,
            "object_store_memory": OBJECT_STORE_BYTES, "log_to_driver": False,
            "num_cpus": num_cpus,
            "_system_config": {"preload_python_modules": [WORKER_PRELOAD],
                               "enable_worker_prestart": True}}


@contextmanager
def local_ray(num_cpus: int | None = None) -> Iterator[None]:
    """A new local Ray (:func:`init_options`) whose trial actors land on its warm workers
    (:func:`local_trial_actors`), started while a thread imports the driver's next modules
    (:func:`import_driver_modules`), stopped with :func:`stop_local_ray` on leaving."""
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with local_trial_actors():
        imports = threading.Thread(target=import_driver_modules, name="driver-imports",
                                   daemon=True)
        imports.start()
        ray.init(**init_options(num_cpus))
        imports.join()
        try:
            yield
        finally:
            stop_local_ray()


def import_driver_modules() -> None:
    """Import :data:`DRIVER_MODULES`; one that is missing (an optional integration) or fails
    is left to the code that needs it, which raises its error then."""
    for name in DRIVER_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - imported again, with its traceback, where used
            continue


def stop_autoscaler_monitor() -> bool:
    """Stop the autoscaler monitor of the Ray this process started (``ray._private``, not
    public API); whether there was one to stop."""
    try:
        from ray._private import worker
        from ray._private.ray_constants import PROCESS_TYPE_MONITOR
    except ImportError:
        return False
    node = getattr(worker, "_global_node", None)
    processes = getattr(node, "all_processes", None) or {}
    if PROCESS_TYPE_MONITOR not in processes or not hasattr(node, "kill_monitor"):
        return False
    node.kill_monitor(check_alive=False)
    return True


def stop_local_ray() -> None:
    """``ray.shutdown()`` of the local Ray this process started, its autoscaler monitor
    first (module docstring)."""
    import ray

    stop_autoscaler_monitor()
    ray.shutdown()
