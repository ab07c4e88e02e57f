"""forest-seg sweeps: point-supervised forest segmentation and its hyperparameter sweeps.

Nothing runs at import time. The library modules are:

- ``config``: :class:`~forest_seg.config.TrainConfig`, every trial hyperparameter.
- ``data`` / ``synthetic``: the Kaggle-layout loader and the embedded synthetic dataset.
- ``points``: point-annotation simulation; ``losses``: partial focal cross-entropy.
- ``model``: ResNet50 encoder + segmentation head; ``metrics``: confusion-matrix metrics.
- ``train``: the training loop and its Ray Tune adapter; ``results``: the results schema.
- ``sweep``: the sweep API (``Study``, ``Launch``, ``run``); ``analysis``: sweep results.
"""

import time as _time

__version__ = "0.1.0"
# When this process imported the package: where a trial's start-up time went (forest_seg.startup)
IMPORTED_AT = _time.time()
