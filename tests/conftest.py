"""Shared fixtures: every test gets its own cache folder, never the user's ~/.cache."""

from pathlib import Path

import pytest

from forest_seg.cache import CACHE_ENV

REAL_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "forest-aerial-sample"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Point ``$FOREST_SEG_CACHE`` at a per-session temporary folder."""
    cache = tmp_path_factory.getbasetemp() / "forest-seg-cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    return cache


@pytest.fixture
def real_sample() -> Path:
    """The shared real tiles beside the repository; skips the test when they are absent."""
    if not (REAL_SAMPLE / "meta_data.csv").is_file():
        pytest.skip(f"real sample not found at {REAL_SAMPLE} (it lives in ../shared/data/ beside the repo)")
    return REAL_SAMPLE
