"""Shared fixtures: the tests never touch the user's ~/.cache, find the real sample, and load
the sweep drivers (scripts, not modules of a package) by their path."""

import importlib.util
import os
from pathlib import Path

import pytest

from forest_seg.cache import CACHE_ENV

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLE = ROOT.parent / "shared" / "data" / "forest-aerial-sample"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Point ``$FOREST_SEG_CACHE`` at a per-session folder before any other fixture runs.

    Session-scoped so that module-scoped fixtures, subprocesses and Ray workers (which
    inherit the environment) all see it; local Ray instances stay on 127.0.0.1.
    """
    cache = tmp_path_factory.getbasetemp() / "forest-seg-cache"
    saved = {
        name: os.environ.get(name) for name in (CACHE_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    }
    os.environ[CACHE_ENV] = str(cache)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    yield cache
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def real_sample() -> Path:
    """The shared real tiles beside the repository; skips the test when they are absent."""
    if not (REAL_SAMPLE / "meta_data.csv").is_file():
        pytest.skip(f"real sample not found at {REAL_SAMPLE} (expected in ../shared/data/)")
    return REAL_SAMPLE


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
