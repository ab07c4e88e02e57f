"""Performance benchmark of the sweep system: ``python -m bench [--quick]``.

It lives beside the library, not in it, and uses only the library's public functions: the
bare loop trains with ``forest_seg.train.train_step``, the trial's own training step. Run it
from the repository root (``sweeps/`` sits beside it).

Measures, in one run: the images/s of a trial run through Ray Tune (the real
``sweeps/grid.py`` driver, as a subprocess: this package never imports Ray) against a bare
PyTorch loop with the same model, batches, device and threads; the share of step time spent
waiting for data and the decoded-tile cache's speed-up over per-item JPEG decoding; the
resident memory of 1 and 2 concurrent trials reading one decoded dataset; ASHA vs FIFO on one
small grid; and, with a CUDA device, fp32 vs bf16 + channels_last and trials packed on one GPU.

Modules: ``report`` (pure helpers: table, last line, /proc parsing, history arithmetic),
``runs`` (the driver subprocess), ``proctree`` (CPU time by role of the driver's processes),
``throughput``, ``cache_speed``, ``memory``, ``sweep_efficiency``, ``gpu``, ``sections``
(each part's rows and notes) and ``__main__`` (the CLI). ``python -m bench.gpu`` is the
prepared GPU check, which needs PyTorch only: ``gpu`` (its CLI and projection),
``gpu_procs`` (its measuring processes, packing, MPS), ``gpu_worker`` (one such process) and
``gpu_steps`` (timing ``train_epoch``/``evaluate``).
"""

from bench.report import (
    LAST_LINE_PREFIX,
    Row,
    data_wait_share,
    format_table,
    last_line,
    parse_smaps_rollup,
    steady_images_per_s,
)

__all__ = ["LAST_LINE_PREFIX", "Row", "data_wait_share", "format_table", "last_line",
           "parse_smaps_rollup", "steady_images_per_s"]
