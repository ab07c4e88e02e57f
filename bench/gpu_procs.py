"""The GPU check's measuring processes: each part runs in its own ``python -m
bench.gpu_worker`` process (a fresh process per trial, as a sweep starts them; a time limit
that can always be enforced; a crash that ends one part only), trials packed on one GPU, and
a private CUDA MPS daemon.

The parent never creates a CUDA context itself: the memory and MPS figures are the workers'.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from forest_seg.errors import ForestSegError

REPO_ROOT = Path(__file__).resolve().parents[1]


class WorkerError(ForestSegError):
    """A measuring process that failed, ran past its time or broke the line protocol."""


class WorkerProcess:
    """A running ``python -m bench.gpu_worker`` process.

    Its stdout's JSON lines are read by a thread into a queue (:meth:`next_line`), commands go
    to its stdin (:meth:`send`), its stderr to a log file quoted in errors.
    """

    def __init__(self, args: list[str], env: dict[str, str] | None, log: Path) -> None:
        self.log = log
        self.launched_at = time.time()
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.gpu_worker", *args,
                 "--launched-at", repr(self.launched_at)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                cwd=REPO_ROOT, env=env)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def next_line(self, deadline: float) -> dict | None:
        """The next JSON line, or ``None`` once the process ended cleanly.

        Raises :class:`WorkerError` (with the end of the worker's stderr) when it exits with
        an error, prints a line that is not JSON, or has printed nothing by ``deadline``
        (a ``time.monotonic()`` value)."""
        try:
            line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            raise WorkerError(f"no result within the time left: {self.describe()}") from None
        if line is None:
            if self.proc.wait() != 0:
                raise WorkerError(f"exit status {self.proc.returncode}: {self.describe()}")
            return None
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise WorkerError(f"not a JSON line {line.strip()[:200]!r}: "
                              f"{self.describe()}") from None

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def describe(self) -> str:
        """The worker's command and the last lines of its stderr."""
        tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
        return f"{' '.join(self.proc.args[2:5])} ... (stderr: {' | '.join(tail) or 'empty'})"

    def close(self) -> None:
        """Kill the process if it still runs, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()


def stream_worker(args: list[str], timeout_s: float, on_line: Callable[[dict], None],
                  env: dict[str, str] | None = None) -> None:
    """Run one worker to its end, handing each of its lines to ``on_line`` as it comes;
    killed (:class:`WorkerError`) after ``timeout_s``, with the lines so far handed on."""
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory(prefix="forest-seg-gpu-check-") as folder:
        worker = WorkerProcess(args, env, Path(folder) / "stderr.log")
        try:
            while (line := worker.next_line(deadline)) is not None:
                on_line(line)
        finally:
            worker.close()


def packed_run(args: list[str], trials: int, timeout_s: float,
               env: dict[str, str] | None = None) -> dict:
    """``trials`` trial workers (``args``: ``trial ... --wait --seconds S``) started at once;
    when all are warm they get ``go`` together and train side by side for S seconds.

    Returns the aggregate images/s (the sum of each trial's own rate), each trial's images/s,
    peak memory and start-up time (launch to warm), within ``timeout_s`` or
    :class:`WorkerError`."""
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory(prefix="forest-seg-gpu-pack-") as folder, \
            ExitStack() as stack:
        workers = []
        for i in range(trials):
            worker = WorkerProcess(args, env, Path(folder) / f"trial{i}.log")
            stack.callback(worker.close)
            workers.append(worker)
        ready = [_expect(worker, "ready", deadline) for worker in workers]
        for worker in workers:
            worker.send("go")
        done = [_expect(worker, "done", deadline) for worker in workers]
    rates = [row["images_per_s"] for row in done]
    return {"trials": trials, "images_per_s": sum(rates), "per_trial_images_per_s": rates,
            "max_memory_allocated_bytes": [row["max_memory_allocated_bytes"] for row in done],
            "startup_s": [row["total_s"] for row in ready],
            "window_s": [row["seconds"] for row in done]}


def _expect(worker: WorkerProcess, event: str, deadline: float) -> dict:
    line = worker.next_line(deadline)
    if line is None or line.get("event") != event:
        raise WorkerError(f"expected a {event!r} line, got {line!r}: {worker.describe()}")
    return line


@contextmanager
def mps_daemon(binary: str) -> Iterator[dict[str, str]]:
    """A private CUDA MPS control daemon (``binary``: the path of ``nvidia-cuda-mps-control``)
    for the block; yields the environment its clients need.

    Its pipe and log folders (``CUDA_MPS_PIPE_DIRECTORY``, ``CUDA_MPS_LOG_DIRECTORY``) are in a
    temporary folder, so it serves only the processes given that environment; it is started
    with ``nvidia-cuda-mps-control -d`` and stopped with ``quit`` on its stdin. No GPU setting
    (compute mode, MIG) is read or changed. Raises :class:`WorkerError` when the daemon does
    not start.
    """
    with tempfile.TemporaryDirectory(prefix="forest-seg-mps-") as folder:
        env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(Path(folder) / "pipe"),
               "CUDA_MPS_LOG_DIRECTORY": str(Path(folder) / "log")}
        for name in ("pipe", "log"):
            (Path(folder) / name).mkdir()
        started = subprocess.run([binary, "-d"], env=env, capture_output=True, text=True,
                                 timeout=60)
        if started.returncode != 0:
            raise WorkerError(f"{binary} -d failed with exit status {started.returncode}: "
                              f"{(started.stderr or started.stdout).strip()[:300]}")
        try:
            yield env
        finally:
            subprocess.run([binary], input="quit\n", env=env, capture_output=True, text=True,
                           timeout=60)
