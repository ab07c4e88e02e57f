"""Where a trial's start-up time goes: the ``startup_*`` metrics of its first report.

A Ray Tune worker process may run several trials one after the other (``reuse_actors``). What
the process paid once, starting and importing the package, is charged to its first trial and
is 0 for the trials after it, which also find the decoded tiles already mapped
(:data:`forest_seg.tiles.TILE_CACHE_EVENTS`). The metrics:

- ``startup_process_s``: from the process's start to its import of ``forest_seg`` (Ray's
  worker start);
- ``startup_imports_s``: from that import to the trial's start (torch, the model code, Ray's
  actor set-up), or, in a worker that imported the trial code as it started
  (:mod:`forest_seg.worker_preload`), to the end of those imports;
- ``startup_idle_s``: how long such a warm worker then waited, ready, for its first trial
  (0 otherwise): time the trial did not wait for;
- ``startup_<part>_s`` for each part :meth:`StartupClock.part` timed (``data``: mapping the
  decoded tiles; ``points``: the split and the point labels; ``baselines``: the trial's
  no-training reference scores; ``model``: building the model and its optimizer);
- ``startup_started_at``: the Unix time the trial started;
- ``startup_worker_pid`` and ``startup_worker_trial`` (1 for a fresh process, 2 for the second
  trial it runs, ...); ``startup_tiles_decoded`` and ``startup_tiles_mapped``: tile cache
  entries the process has decoded and memory-mapped so far.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .results import STARTUP_PREFIX

_trials_started = 0  # trials this process has started (a reused Tune worker runs several)
_warmed_at: float | None = None  # when import_trial_code finished in this process


def import_trial_code() -> None:
    """Import what every trial imports (torch, torchvision, the model and the training loop)
    and note when that finished: run by :mod:`forest_seg.worker_preload` as a Ray worker
    starts, before Ray hands it a trial. An import that fails is left to the trial, whose own
    import raises it with its traceback."""
    global _warmed_at
    try:
        import forest_seg.train  # noqa: F401
    except Exception:  # noqa: BLE001 - raised again, in the trial
        return
    _warmed_at = time.time()


def process_started_at() -> float:
    """This process's start as a Unix time, from ``/proc`` (NaN where there is none)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return math.nan
    return time.time() - uptime + since_boot


class StartupClock:
    """Times one trial's start-up; made when the trial starts (which counts it as one more
    trial of this process)."""

    def __init__(self) -> None:
        from forest_seg import IMPORTED_AT

        global _trials_started
        _trials_started += 1
        self.worker_trial = _trials_started
        first = self.worker_trial == 1
        now = self.started_at = time.time()
        ready = now if _warmed_at is None else _warmed_at
        self.seconds = {
            "process": IMPORTED_AT - process_started_at() if first else 0.0,
            "imports": ready - IMPORTED_AT if first else 0.0,
            "idle": now - ready if first else 0.0,
        }

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Time the block as the start-up part ``name`` (added to an earlier time of it)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float | int]:
        """The ``startup_*`` metrics (module docstring) as they stand now."""
        from .tiles import TILE_CACHE_EVENTS

        return {
            **{f"{STARTUP_PREFIX}{name}_s": value for name, value in self.seconds.items()},
            f"{STARTUP_PREFIX}started_at": self.started_at,
            f"{STARTUP_PREFIX}worker_pid": os.getpid(),
            f"{STARTUP_PREFIX}worker_trial": self.worker_trial,
            f"{STARTUP_PREFIX}tiles_decoded": TILE_CACHE_EVENTS["decoded"],
            f"{STARTUP_PREFIX}tiles_mapped": TILE_CACHE_EVENTS["mapped"],
        }
