"""CPU seconds of a process tree by role, sampled from /proc while a sweep driver runs.

A local Ray sweep is a tree: the driver (``python sweeps/grid.py``) starts ``gcs_server`` and
``raylet``, the raylet starts the workers (``ray::...``: the trial itself) and helper agents.
Sampling every process's cumulative CPU time shows what, besides the trial, takes CPU on the
node, and at which niceness the trial runs.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .report import system_busy_seconds

TRIAL_ROLE = "trial worker"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class ProcStat:
    pid: int
    ppid: int
    comm: str
    cpu_s: float  # user + system
    nice: int


def parse_stat(text: str, ticks: int = CLOCK_TICKS) -> ProcStat:
    """One ``/proc/<pid>/stat`` line -> :class:`ProcStat` (``comm`` may hold spaces and
    parentheses, so fields are counted from its closing parenthesis)."""
    pid_text, _, rest = text.partition(" (")
    comm, _, tail = rest.rpartition(") ")
    fields = tail.split()
    # fields[0] is field 3 (state): ppid 4, utime 14, stime 15, nice 19.
    return ProcStat(pid=int(pid_text), ppid=int(fields[1]), comm=comm,
                    cpu_s=(int(fields[11]) + int(fields[12])) / ticks, nice=int(fields[16]))


def role(cmdline: str, comm: str, is_root: bool) -> str:
    """The role of one process of a Ray sweep tree, from its name and command line (Ray
    renames a worker ``ray::IDLE``, then ``ray::ImplicitFunc...`` when the trial lands on it)."""
    name = cmdline or comm
    if is_root:
        return "driver (sweeps/grid.py)"
    if comm == "gcs_server" or "gcs_server" in cmdline.split(" ")[0]:
        return "gcs_server"
    if comm == "raylet" or cmdline.split(" ")[0].endswith("/raylet"):
        return "raylet"
    if name.startswith("ray::") or comm.startswith("ray::"):
        if "ImplicitFu" in name or "trainable" in name:  # comm keeps 15 characters
            return TRIAL_ROLE
        if "IDLE" in name:
            return "idle ray workers"
        return "other ray helpers (agents, monitors)"
    if "default_worker.py" in cmdline:
        return "idle ray workers"
    return "other ray helpers (agents, monitors)"


def descendants(stats: dict[int, ProcStat], root: int) -> set[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, []))
    return found & (set(stats) | {root})


def process_stats() -> dict[int, ProcStat]:
    """Every process of this machine now, by pid, from ``/proc/<pid>/stat``."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
    return stats


def command_line(pid: int) -> str:
    """The command line of ``pid`` (as Ray renames its workers: ``ray::IDLE``...); "" once it
    has exited."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


class TreeSampler:
    """Samples the CPU time of the tree under ``root_pid`` every ``interval`` seconds in a
    background thread, with ``progress()`` (e.g. epochs written so far) at each sample, so
    :meth:`window` can sum the CPU each role used between two progress marks."""

    def __init__(self, root_pid: int, interval: float = 0.5, progress=None) -> None:
        self.root_pid, self.interval = root_pid, interval
        self.progress = progress or (lambda: 0)
        self.roles: dict[int, str] = {}
        self.samples: list[tuple[float, int, dict[int, float], float]] = []
        self.trial_nice: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        if not Path("/proc").is_dir():
            return
        import time

        stats = process_stats()
        cpu = {}
        for pid in descendants(stats, self.root_pid):
            if pid not in stats:
                continue
            st = stats[pid]
            cmdline = command_line(pid)
            if cmdline or pid not in self.roles:  # an exiting process has no command line
                self.roles[pid] = role(cmdline, st.comm, pid == self.root_pid)
            cpu[pid] = st.cpu_s
            if self.roles[pid] == TRIAL_ROLE and st.cpu_s > 0.5:
                self.trial_nice = st.nice
        try:
            done = int(self.progress())
        except (OSError, ValueError):
            done = 0
        self.samples.append((time.monotonic(), done, cpu, system_busy_seconds()))

    def window(self, start_mark: int, end_mark: int) -> tuple[float, dict[str, float]]:
        """(seconds, {role: CPU seconds}) from the first sample with progress >= start_mark
        to the first with progress >= end_mark (or the last sample)."""
        return cpu_window(self.samples, self.roles, start_mark, end_mark)

    def foreign_cores(self, marks: int) -> list[float]:
        """For each step k = 1..marks (epoch k: from progress k-1 to k), the cores used by
        processes outside this tree: the machine's busy time minus the tree's."""
        return foreign_cores(self.samples, self.roles, marks)


def foreign_cores(samples, roles, marks: int) -> list[float]:
    """See :meth:`TreeSampler.foreign_cores`; NaN for a step no two samples bracket."""
    out = []
    for k in range(1, marks + 1):
        first = next((s for s in samples if s[1] >= k - 1), None)
        last = next((s for s in samples if s[1] >= k), None)
        if first is None or last is None or last[0] <= first[0]:
            out.append(float("nan"))
            continue
        seconds, used = cpu_window(samples, roles, k - 1, k)
        machine = last[3] - first[3]
        out.append(max((machine - sum(used.values())) / seconds, 0.0) if seconds else math.nan)
    return out


def cpu_window(samples: list[tuple], roles: dict[int, str],
               start_mark: int, end_mark: int) -> tuple[float, dict[str, float]]:
    """CPU seconds per role between two progress marks of timestamped samples
    ``(time, progress, {pid: cumulative CPU s}, ...)``; a process first seen inside the window
    counts from 0. Empty when no sample reached ``start_mark``."""
    first = next((s for s in samples if s[1] >= start_mark), None)
    if first is None:
        return 0.0, {}
    last = next((s for s in samples if s[1] >= end_mark and s[0] > first[0]), samples[-1])
    latest: dict[int, float] = {}  # a process that exits inside the window keeps its last value
    for sample in samples:
        if first[0] <= sample[0] <= last[0]:
            latest.update(sample[2])
    totals: dict[str, float] = {}
    for pid, cpu in latest.items():
        used = cpu - first[2].get(pid, 0.0)
        totals[roles.get(pid, "?")] = totals.get(roles.get(pid, "?"), 0.0) + max(used, 0.0)
    return last[0] - first[0], dict(sorted(totals.items(), key=lambda kv: -kv[1]))
