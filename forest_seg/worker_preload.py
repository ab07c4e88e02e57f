"""Imported by every worker process of a local Ray that a sweep starts, as the process starts
(Ray's ``preload_python_modules``, :mod:`forest_seg.sweep.local_ray`), before Ray hands it a
trial. Unlike the rest of the package, importing it does work, which is its only purpose: it
imports the trial code (torch, torchvision, the model and the training loop) and notes when
that finished (:func:`forest_seg.startup.import_trial_code`)."""

from forest_seg.startup import import_trial_code

import_trial_code()
