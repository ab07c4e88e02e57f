"""Running the real sweep driver (``sweeps/grid.py``) as a subprocess and reading its files.

The benchmark never imports Ray: a Tune trial is measured exactly as a user runs one, through
the driver, and read back from the experiment's ``results.csv`` and ``history.csv``.
"""

from __future__ import annotations

import math
import os
import queue
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from forest_seg.errors import ForestSegError

from .proctree import TreeSampler

REPO_ROOT = Path(__file__).resolve().parents[1]
GRID_SCRIPT = REPO_ROOT / "sweeps" / "grid.py"


class BenchError(ForestSegError):
    """A measurement that could not be taken (a failed driver run, a missing script)."""


def collect_results(what: str, results, procs: list, timeout: float) -> list:
    """One result per worker process from the queue ``results``, within ``timeout`` seconds.

    A worker that exits with an error ends the wait at once (its siblings would otherwise
    wait on their barrier until it times out): :class:`BenchError` names ``what`` and the
    exit codes. Every worker is joined, and terminated if still alive, before returning."""
    out, deadline = [], time.monotonic() + timeout
    try:
        while len(out) < len(procs):
            try:
                out.append(results.get(timeout=1.0))
            except queue.Empty:
                failed = any(p.exitcode not in (None, 0) for p in procs)
                if failed or time.monotonic() > deadline:
                    codes = [p.exitcode for p in procs]
                    for p in procs:
                        p.terminate()
                    reason = "a worker failed" if failed else f"none within {timeout:g} s"
                    raise BenchError(f"{what}: {len(procs) - len(out)} worker(s) did not "
                                     f"report ({reason}); exit codes {codes}") from None
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.terminate()
                p.join()
    return out


@dataclass
class DriverRun:
    """One finished ``sweeps/grid.py`` run: its experiment folder, frames and wall time."""

    path: Path
    results: pd.DataFrame
    history: pd.DataFrame
    wall_s: float
    log: Path
    sampler: TreeSampler | None = None
    started_at: float = math.nan  # Unix times of the driver's start and end
    ended_at: float = math.nan


def grid_script() -> Path:
    if not GRID_SCRIPT.is_file():
        raise BenchError(
            f"sweep driver {GRID_SCRIPT} not found; the benchmark runs from a source checkout, "
            "where sweeps/ sits beside bench/"
        )
    return GRID_SCRIPT


def run_grid(storage: Path, name: str, flags: list[str], timeout_s: float,
             env: dict[str, str] | None = None, profile: bool = False) -> DriverRun:
    """Run ``python sweeps/grid.py <flags> --storage-path storage --name name``.

    Output goes to ``storage/name.log``. A non-zero exit, a timeout or missing result files
    raise :class:`BenchError` naming the log. ``profile`` samples the CPU time of the driver's
    process tree (Ray's processes and the trial) against the epochs written to history.csv.
    """
    storage.mkdir(parents=True, exist_ok=True)
    log = storage / f"{name}.log"
    path = storage / name
    command = [sys.executable, str(grid_script()), *flags,
               "--storage-path", str(storage), "--name", name]
    run_env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1",
               **(env or {})}
    sampler = None
    started_at, start = time.time(), time.perf_counter()
    with open(log, "w") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=run_env,
                                cwd=REPO_ROOT)
        try:
            if profile:
                sampler = TreeSampler(proc.pid, progress=lambda: _epochs_written(path))
                with sampler:
                    returncode = proc.wait(timeout_s)
            else:
                returncode = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError(f"sweeps/grid.py ({name}) ran past {timeout_s:.0f} s; "
                             f"see {log}") from None
    wall, ended_at = time.perf_counter() - start, time.time()
    if returncode != 0:
        raise BenchError(f"sweeps/grid.py ({name}) failed with exit status {returncode}: "
                         f"{_last_error(log)} (full log: {log})")
    try:
        results = pd.read_csv(path / "results.csv")
        history = pd.read_csv(path / "history.csv")
    except (OSError, pd.errors.ParserError) as e:
        raise BenchError(f"sweeps/grid.py ({name}) left no readable results: {e}; "
                         f"see {log}") from None
    return DriverRun(path, results, history, wall, log, sampler, started_at, ended_at)


def _epochs_written(path: Path) -> int:
    """Rows of history.csv so far (0 before it exists)."""
    try:
        with open(path / "history.csv") as f:
            return max(sum(1 for line in f if line.strip()) - 1, 0)
    except OSError:
        return 0


def _last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:") or "Error" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def fixed_flags(values: dict[str, object]) -> list[str]:
    """TrainConfig fields as the driver's fixed flags (``image_size`` -> ``--image-size``)."""
    flags: list[str] = []
    for name, value in values.items():
        if value is None:
            continue
        flags += ["--" + name.replace("_", "-"), str(value)]
    return flags
