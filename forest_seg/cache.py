"""Where forest-seg keeps generated and decoded data between runs."""

import os
from pathlib import Path

CACHE_ENV = "FOREST_SEG_CACHE"


def cache_dir() -> Path:
    """The cache root: ``$FOREST_SEG_CACHE`` if set, else ``~/.cache/forest_seg``.

    The folder is created on first use. Tests point the variable at a temporary folder.
    """
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "forest_seg")
    root.mkdir(parents=True, exist_ok=True)
    return root
