"""Shared fixtures: the tests never touch the user's ~/.cache nor join a Ray cluster the machine
points at (each test starts its own local Ray on 127.0.0.1), find the real sample, load the
sweep drivers (scripts, not modules of a package) by their path, and count the trials a sweep
runs at once."""

import importlib.util
import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from forest_seg.cache import CACHE_ENV

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLE = ROOT.parent / "shared" / "data" / "forest-aerial-sample"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Point ``$FOREST_SEG_CACHE`` at a per-session folder before any other fixture runs, and
    unset ``RAY_ADDRESS``: no test, driver subprocess or Ray worker joins the cluster the
    machine points at.

    Session-scoped so that module-scoped fixtures, subprocesses and Ray workers (which
    inherit the environment) all see it; local Ray instances stay on 127.0.0.1. A test that
    asserts what a cache folder holds uses its own (:func:`own_cache`).
    """
    cache = tmp_path_factory.getbasetemp() / "forest-seg-cache"
    saved = {name: os.environ.get(name)
             for name in (CACHE_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    os.environ[CACHE_ENV] = str(cache)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    yield cache
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """A tile and dataset cache folder of this test alone (``$FOREST_SEG_CACHE``), with an empty
    in-process tile cache, for tests that assert what a cache holds: the session's shared
    folder also holds other tests' files."""
    from forest_seg import tiles

    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    monkeypatch.setattr(tiles, "_TILE_CACHE", {})
    return cache


@pytest.fixture
def local_ray():
    """``with local_ray(num_cpus=1):`` a Ray instance of the test's own for the block: always a
    new local one on 127.0.0.1 (``address="local"``: never the cluster of ``RAY_ADDRESS`` or
    of a ``ray start`` on this machine)."""
    import ray

    @contextmanager
    def started(**options):
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                 log_to_driver=False, **options)
        try:
            yield ray
        finally:
            ray.shutdown()

    return started


@pytest.fixture
def running_trials(tmp_path, monkeypatch):
    """The most trials that were RUNNING at once in the sweeps this test runs in its own
    process, as Ray Tune's own trial statuses show them: a callback joins every sweep's
    callbacks and records the highest count. Call the fixture's value to read it."""
    from ray import tune

    from forest_seg.sweep import callbacks

    record = tmp_path / "most-running-trials.json"

    class MostRunning(tune.Callback):
        def __init__(self) -> None:
            self.most = 0

        def _count(self, trials) -> None:
            running = sum(trial.status == "RUNNING" for trial in trials)
            if running > self.most:
                self.most = running
                record.write_text(json.dumps(running))

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            self._count(trials)

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self._count(trials)

        def on_step_end(self, iteration, trials, **info) -> None:
            self._count(trials)

    original = callbacks.sweep_callbacks
    monkeypatch.setattr(callbacks, "sweep_callbacks",
                        lambda *args: [*original(*args), MostRunning()])
    return lambda: json.loads(record.read_text()) if record.is_file() else 0


@pytest.fixture
def real_sample() -> Path:
    """The shared real tiles beside the repository; skips the test when they are absent."""
    if not (REAL_SAMPLE / "meta_data.csv").is_file():
        pytest.skip(f"real sample not found at {REAL_SAMPLE} (expected in ../shared/data/)")
    return REAL_SAMPLE


# --- host reads: torch.cuda.set_sync_debug_mode, emulated on a CPU --------------------------

HOST_READ_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu",
                     "numpy", "nonzero")
"""Tensor methods that, on a GPU tensor, make the host wait for the device: reading a value,
copying to the host, or an output whose size depends on the values (``nonzero``)."""
HOST_READ_FUNCTIONS = ("nonzero", "unique", "masked_select", "bincount")
"""torch functions that do the same on a GPU (``bincount`` reads the maximum to size its
output)."""


class HostReads:
    """Counts, while :meth:`watching`, the tensor calls that would synchronise a GPU with its
    host, so that a test on a CPU can assert where they happen.

    Calls land in ``segments[-1]``; :meth:`mark` starts a new segment (e.g. per training step).
    Boolean-mask indexing (``x[mask]``, ``x[mask] = v``) counts as ``"mask-index"``. Calls on a
    tensor for which ``exempt(tensor)`` is true are not counted (e.g. the optimizer's step
    counters, which torch keeps on the host by design).
    """

    def __init__(self, monkeypatch) -> None:
        import torch

        self.segments: list[list[str]] = [[]]
        self.active = False
        self.exempt = lambda tensor: False
        for owner, names in ((torch.Tensor, HOST_READ_METHODS), (torch, HOST_READ_FUNCTIONS)):
            for name in names:
                monkeypatch.setattr(owner, name, self._counted(name, getattr(owner, name)))
        for name in ("__getitem__", "__setitem__"):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._mask_indexing(original))

    def _record(self, name: str, tensor) -> None:
        if self.active and not self.exempt(tensor):
            self.segments[-1].append(name)

    def _counted(self, name: str, original):
        def counted(tensor, *args, **kwargs):
            self._record(name, tensor)
            return original(tensor, *args, **kwargs)

        return counted

    def _mask_indexing(self, original):
        import torch

        def indexed(tensor, index, *args):
            parts = index if isinstance(index, tuple) else (index,)
            if any(isinstance(p, torch.Tensor) and p.dtype in (torch.bool, torch.uint8)
                   for p in parts):
                self._record("mask-index", tensor)
            return original(tensor, index, *args)

        return indexed

    @contextmanager
    def watching(self):
        """Count inside the block."""
        self.active = True
        try:
            yield self
        finally:
            self.active = False

    @contextmanager
    def paused(self):
        """Do not count inside the block (e.g. while a batch is being built)."""
        active, self.active = self.active, False
        try:
            yield
        finally:
            self.active = active

    def mark(self) -> None:
        self.segments.append([])

    @property
    def calls(self) -> list[str]:
        return [name for segment in self.segments for name in segment]


@pytest.fixture
def host_reads(monkeypatch) -> HostReads:
    """A :class:`HostReads` counter installed for the test (idle until ``watching()``)."""
    return HostReads(monkeypatch)


@pytest.fixture(scope="session")
def sweep_driver():
    """``sweep_driver("grid")``: the module of ``sweeps/grid.py``, loaded from its file."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"sweeps_{name}",
                                                      ROOT / "sweeps" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
