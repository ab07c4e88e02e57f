"""Shared fixtures: the tests never touch the user's ~/.cache, and find the real sample."""

import os
from pathlib import Path

import pytest

from forest_seg.cache import CACHE_ENV

REAL_SAMPLE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "forest-aerial-sample"
)


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
