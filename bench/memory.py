"""Resident memory of N concurrent trials that read one decoded dataset.

Each worker is a spawned process (no Ray) that does what a trial does to the tiles: open the
memory-mapped decoded cache with :func:`load_tiles` and read every tile. All workers hold the
tiles at the same time (a barrier) while each reads its own ``/proc/self/smaps_rollup``. The
dataset is held once on the node when the workers' proportional set sizes (PSS, which splits
a shared page between the processes mapping it) of the dataset add up to one copy.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np

from .report import file_memory, read_smaps_rollup
from .runs import BenchError, collect_results

WORKER_TIMEOUT_S = 300


def _worker(root: str, size: int, points: int, barrier, results) -> None:
    from forest_seg.batches import prepare_trial_data
    from forest_seg.config import TrainConfig
    from forest_seg.data import load_tiles

    before = read_smaps_rollup()
    tiles = load_tiles(root, size)
    files = [str(a.filename) for a in (tiles.images, tiles.masks) if hasattr(a, "filename")]
    checksum = int(tiles.images.sum(dtype=np.uint64)) + int(tiles.masks.sum(dtype=np.uint64))
    barrier.wait(WORKER_TIMEOUT_S)  # every worker now maps and has touched every tile
    after = read_smaps_rollup()
    dataset = file_memory(files)
    # A trial's own share: its fixed point labels for every tile (train and validation).
    data = prepare_trial_data(TrainConfig(data=root, image_size=size, points=points, batch_size=2))
    with_labels = read_smaps_rollup()
    barrier.wait(WORKER_TIMEOUT_S)  # nobody unmaps before all have measured
    results.put({"before": before, "after": after, "with_labels": with_labels,
                 "dataset": dataset, "memory_mapped": bool(files),
                 "checksum": checksum, "tiles": len(tiles),
                 "labels_bytes": int(data.train.labels.nbytes + data.val.labels.nbytes),
                 "dataset_bytes": int(tiles.images.nbytes + tiles.masks.nbytes)})


def _decode_only(root: str, size: int) -> None:
    from forest_seg.data import load_tiles

    load_tiles(root, size)


def concurrent_memory(root: str | Path, size: int, n: int, points: int = 50) -> list[dict]:
    """Run ``n`` workers at once; one dict per worker: ``before``/``after``/``with_labels``
    smaps_rollup fields in bytes (after imports / holding the touched tiles / with the trial's
    point labels too), ``dataset`` (Rss, Pss, ... of the cache files' mappings),
    ``dataset_bytes``, ``labels_bytes``, ``tiles``.

    Call it from a process that does not map the dataset itself, or that process takes its
    share of every page's PSS.
    """
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(root), size, points, barrier, results))
             for _ in range(n)]
    for p in procs:
        p.start()
    out = collect_results("memory benchmark", results, procs, WORKER_TIMEOUT_S)
    if not out[0]["after"]:
        raise BenchError("memory benchmark: /proc/self/smaps_rollup is not readable here "
                         "(Linux 4.14+ needed)")
    return out


def ensure_decoded(root: str | Path, size: int) -> None:
    """Build the decoded cache in a throwaway process, so this one never maps it."""
    p = mp.get_context("spawn").Process(target=_decode_only, args=(str(root), size))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise BenchError(f"memory benchmark: decoding {root} at {size} px failed "
                         f"(exit code {p.exitcode})")


def memory_summary(workers: list[dict]) -> dict[str, float]:
    """Means over the workers of: RSS and PSS (bytes, holding the tiles), the dataset files'
    RSS and PSS (``dataset_rss``, ``dataset_pss``), the point labels' PSS (``labels_pss``);
    ``copies``: the dataset PSS of all workers together / the dataset's size (1 = held once)
    and ``sharers``: dataset RSS / PSS (how many processes map each page)."""
    n = len(workers)
    dataset = workers[0]["dataset_bytes"]

    def mean(values) -> float:
        return sum(values) / n

    mapped = all(w["memory_mapped"] for w in workers)
    if mapped:  # the cache files' own mappings
        data_pss = [w["dataset"].get("Pss", 0) for w in workers]
        data_rss = mean(w["dataset"].get("Rss", 0) for w in workers)
    else:  # tiles loaded into private memory: what loading them added
        data_pss = [w["after"]["Pss"] - w["before"]["Pss"] for w in workers]
        data_rss = mean(w["after"]["Rss"] - w["before"]["Rss"] for w in workers)
    return {
        "trials": n, "tiles": workers[0]["tiles"], "dataset_bytes": dataset,
        "memory_mapped": mapped,
        "rss": mean(w["after"]["Rss"] for w in workers),
        "pss": mean(w["after"]["Pss"] for w in workers),
        "dataset_rss": data_rss, "dataset_pss": mean(data_pss),
        "labels_pss": mean(w["with_labels"]["Pss"] - w["after"]["Pss"] for w in workers),
        "labels_bytes": workers[0]["labels_bytes"],
        "copies": sum(data_pss) / dataset if dataset else float("nan"),
        "sharers": data_rss / mean(data_pss) if mean(data_pss) else float("nan"),
    }
