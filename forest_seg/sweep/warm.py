"""Work the sweep driver does once, before any trial starts, so that no trial pays for it."""

from __future__ import annotations

from .study import Study


def decode_tiles(study: Study) -> None:
    """Build the decoded-tile cache (:func:`forest_seg.tiles.load_tiles`) of every dataset and
    image size the study's trials use (a search: its base's), so the trials only memory-map
    it: without this the first wave of trials all decode the dataset at once, each into its
    own temporary copy. ``study.base.data`` must already be a resolved root
    (:func:`forest_seg.sweep.runner.resolve_data`). On a cluster this fills the driver node's
    cache; another node's trials decode once per node."""
    from ..tiles import load_tiles

    wanted = set()
    for cfg in study.trial_configs():
        wanted.add((cfg.data, cfg.image_size))
        if cfg.val_data is not None:
            wanted.add((cfg.val_data, cfg.image_size))
    for root, size in sorted(wanted):
        load_tiles(root, size)
