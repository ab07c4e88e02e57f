"""Imported by every worker process of a local Ray that a sweep starts, as the process starts
(Ray's ``preload_python_modules``, :mod:`forest_seg.sweep.local_ray`), before Ray hands it a
trial. Unlike the rest of the package, importing it does work, which is its only purpose: it
imports what a trial needs (Ray Tune's function trainable, which the trial actor's class is,
the function it runs, and the trial code: torch, torchvision, the model and the training loop)
and notes when that finished (:func:`forest_seg.startup.import_trial_code`)."""

import ray.tune  # noqa: F401 - the trial actor's class

import forest_seg.sweep.torchless  # noqa: F401 - the function the actor runs
from forest_seg.startup import import_trial_code

import_trial_code()
