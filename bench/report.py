"""Pure helpers of the benchmark: reading a trial's history, /proc parsing, the results table
and its last line. Nothing here runs a model or a process, so all of it is unit-tested."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the GPU check (bench.gpu) runs where pandas may be absent
    import pandas as pd

LAST_LINE_PREFIX = "tune/bare throughput ratio: "
WARMUP_EPOCHS = 1  # epoch 1 faults in the tiles and warms allocators; compared: epochs >= 2
MB = 1024**2


@dataclass
class Row:
    """One line of the results table: ``value`` against ``goal``; ``met`` None = no goal."""

    section: str
    quantity: str
    value: str
    goal: str = ""
    met: bool | None = None


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when the denominator is 0 or either is NaN."""
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return numerator / denominator


def fmt(value: float, digits: int = 2, unit: str = "") -> str:
    """A number with ``digits`` decimals and an optional unit; NaN -> ``n/a``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def pct(share: float, digits: int = 1) -> str:
    """A fraction as a percentage (0.034 -> ``3.4%``); NaN -> ``n/a``."""
    return "n/a" if math.isnan(share) else f"{100 * share:.{digits}f}%"


def last_line(throughput_ratio: float) -> str:
    """The benchmark's final line, exactly ``tune/bare throughput ratio: X.XX``."""
    if math.isnan(throughput_ratio) or throughput_ratio < 0:
        raise ValueError(f"the throughput ratio must be a number >= 0, got {throughput_ratio}")
    return f"{LAST_LINE_PREFIX}{throughput_ratio:.2f}"


def format_table(rows: Sequence[Row]) -> str:
    """Rows as an aligned plain-text table: section | quantity | value | goal | verdict."""
    header = ("section", "quantity", "value", "goal", "")
    cells = [header] + [
        (r.section, r.quantity, r.value, r.goal,
         "" if r.met is None else ("ok" if r.met else "MISSED"))
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(header))).rstrip()
             for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths[:-1]))
    return "\n".join(lines)


def steady(history: pd.DataFrame, warmup: int = WARMUP_EPOCHS) -> pd.DataFrame:
    """The epochs after the warm-up (``epoch > warmup``) of a per-epoch frame."""
    return history[history["epoch"] > warmup]


def train_seconds(history: pd.DataFrame, images_per_epoch: int) -> pd.Series:
    """Train-phase seconds per epoch from a history frame: ``images / images_per_s``."""
    return images_per_epoch / history["images_per_s"]


def data_wait_share(history: pd.DataFrame, images_per_epoch: int,
                    warmup: int = WARMUP_EPOCHS) -> float:
    """Share of train-phase time spent waiting for batches, epochs after the warm-up:
    ``sum(data_time_s) / sum(train seconds)``; NaN without such epochs."""
    rows = steady(history, warmup)
    total = float(train_seconds(rows, images_per_epoch).sum())
    return ratio(float(rows["data_time_s"].sum()), total)


def steady_images_per_s(history: pd.DataFrame, stat: str = "median",
                        warmup: int = WARMUP_EPOCHS) -> float:
    """``images_per_s`` of the epochs after the warm-up: their ``median`` or ``best`` (the
    fastest epoch: other load on a machine only ever slows an epoch down, so the best epoch
    is the least disturbed estimate). NaN without such epochs."""
    if stat not in ("median", "best"):
        raise ValueError(f"stat must be 'median' or 'best', got {stat!r}")
    values = steady(history, warmup)["images_per_s"]
    if not len(values):
        return math.nan
    return float(values.max() if stat == "best" else values.median())


def parse_proc_stat_busy(text: str) -> tuple[float, float]:
    """(busy, total) clock ticks of all CPUs from a ``/proc/stat`` text: busy = user + nice +
    system + irq + softirq + steal (steal: taken by the hypervisor for other guests)."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            v = [int(x) for x in parts[1:9]] + [0] * max(0, 8 - len(parts[1:9]))
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            busy = user + nice + system + irq + softirq + steal
            return float(busy), float(busy + idle + iowait)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def system_busy_seconds() -> float:
    """CPU-seconds all processes of the machine have used since boot (NaN off Linux)."""
    try:
        busy, _ = parse_proc_stat_busy(Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return math.nan
    return busy / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def wait_for_quiet(max_s: float, limit: float, window_s: float = 3.0,
                   step_s: float = 1.0) -> tuple[float, bool]:
    """Wait (at most ``max_s``) until other processes have used fewer than ``limit`` cores
    for ``window_s`` in a row; returns (seconds waited, whether that happened). Other load
    is the machine's busy time minus this process's."""
    import time

    start = time.monotonic()
    calm = 0.0
    while True:
        busy, own = system_busy_seconds(), time.process_time()
        if math.isnan(busy):
            return 0.0, False
        time.sleep(step_s)
        other = (system_busy_seconds() - busy - (time.process_time() - own)) / step_s
        calm = calm + step_s if other < limit else 0.0
        waited = time.monotonic() - start
        if calm >= window_s:
            return waited, True
        if waited >= max_s:
            return waited, False


def quiet_stat(values: Sequence[float], foreign: Sequence[float],
               limit: float) -> tuple[float, int]:
    """(the median of the values whose ``foreign`` load, in cores, is below ``limit``, how
    many those were); without any such value, (the best value, 0): other load only slows a
    measurement down, so the fastest is the least disturbed one. NaN when empty."""
    pairs = [(v, f) for v, f in zip(values, foreign, strict=True) if not math.isnan(v)]
    clean = [v for v, f in pairs if not math.isnan(f) and f < limit]
    if clean:
        return median(clean), len(clean)
    return (max(v for v, _ in pairs) if pairs else math.nan), 0


def median(values: Iterable[float]) -> float:
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return math.nan
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def images_per_epoch(n_train: int, batch_size: int) -> int:
    """Images trained per epoch: a final batch of a single tile is dropped (BatchNorm)."""
    return n_train - 1 if n_train % batch_size == 1 else n_train


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` -> {field: bytes} (``Rss``, ``Pss``, ``Pss_File``, ...).

    Lines look like ``Pss:    1234 kB``; the header line (an address range) is skipped.
    """
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or len(parts) != 2 or parts[1] != "kB" or not parts[0].isdigit():
            continue
        fields[name.strip()] = int(parts[0]) * 1024
    return fields


def parse_smaps(text: str) -> dict[str, dict[str, int]]:
    """``/proc/<pid>/smaps`` -> {mapped file path: {field: bytes}}, summed over the mappings
    of each path (anonymous mappings are left out)."""
    files: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in text.splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:  # a mapping's header
            path = head[5].strip() if len(head) == 6 else ""
            current = files.setdefault(path, {}) if path.startswith("/") else None
            continue
        if current is not None:
            for name, value in parse_smaps_rollup(line).items():
                current[name] = current.get(name, 0) + value
    return files


def file_memory(paths: Iterable[str], pid: int | str = "self") -> dict[str, int]:
    """Rss, Pss, ... (bytes) of the mappings of ``paths`` in a process, summed; {} where
    /proc is unavailable."""
    try:
        files = parse_smaps(Path(f"/proc/{pid}/smaps").read_text())
    except OSError:
        return {}
    total: dict[str, int] = {}
    for path in paths:
        for name, value in files.get(str(path), {}).items():
            total[name] = total.get(name, 0) + value
    return total


def read_smaps_rollup(pid: int | str = "self") -> dict[str, int]:
    """The current process's (or ``pid``'s) memory rollup in bytes; {} where unavailable."""
    try:
        return parse_smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())
    except OSError:
        return {}


def cpu_model(cpuinfo: str) -> str:
    """The first ``model name`` of a /proc/cpuinfo text (``unknown CPU`` when absent)."""
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or "unknown CPU"


def load_average() -> float:
    """The 1-minute load average (NaN where unavailable)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return math.nan


def machine_lines(cores: int, device: str) -> list[str]:
    """A few lines naming the machine the figures come from."""
    import torch

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    lines = [
        f"machine: {cpu_model(cpuinfo)}, {cores} cores available "
        f"({os.cpu_count()} online), {platform.system()} {platform.release()}",
        f"software: Python {platform.python_version()}, torch {torch.__version__}",
        f"device: {device}",
        f"load average at start: {fmt(load_average())}",
    ]
    return lines
