"""The benchmark's parts; each returns its table rows and notes (findings, diagnoses)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from forest_seg.config import TrainConfig

from .report import (
    MB,
    Row,
    data_wait_share,
    fmt,
    median,
    pct,
    quiet_stat,
    ratio,
    wait_for_quiet,
)

TUNE_GOAL, DATA_WAIT_GOAL, FULL_DATASET_TILES = 0.90, 0.05, 5108
EFFICIENCY_GOAL = 0.85  # of the default grid on 2 CPU cores
QUIET = 0.25  # an epoch is quiet when other processes used fewer cores than this meanwhile
MIN_QUIET = 3  # quiet bare epochs wanted before giving up on more


@dataclass
class BenchSettings:
    data: str
    cpus: int
    device: str
    batch_size: int
    cache_size: int
    timeout_s: float
    image_size: int
    max_tiles: int
    encoder_stages: int
    epochs: int
    bare_after: int
    cache_items: int | None
    sweep_tiles: int
    sweep_epochs: int
    sweep_seeds: int
    gpu_tiles: int
    pack_seconds: float
    ray_worker_niceness: int | None = None
    quiet_wait: float = 0.0
    efficiency_seeds: int | None = None  # None: the default grid's 3 seeds


def _progress(message: str) -> None:
    print(f"bench: {message}", flush=True)


# --------------------------------------------------------------------------- throughput
def throughput_section(s: BenchSettings, work: Path) -> tuple[list[Row], list[str], float]:
    import torch

    from .throughput import (
        BareRun,
        ThroughputSettings,
        bare_block,
        run_tune_trial,
        tune_overheads,
    )

    ts = ThroughputSettings(data=s.data, image_size=s.image_size, max_tiles=s.max_tiles,
                            batch_size=s.batch_size, encoder_stages=s.encoder_stages,
                            epochs=s.epochs, cpus=s.cpus, device=s.device)
    torch.set_num_threads(s.cpus)  # what trainable() does with the trial's Ray CPUs
    _progress(f"bare loop, {s.epochs} epochs (+ ideal-path epochs), {s.cpus} threads, "
              f"{s.device}")
    # On CUDA a trial trains in bf16 autocast + channels_last (TrainConfig's defaults).
    bare = BareRun.create(ts.config(), s.device, amp=ts.cuda, channels_last=ts.cuda)
    _calm(s)
    bare_block(bare, range(1, s.epochs + 1), ideal_too=True)
    _progress("the same trial through Ray Tune (sweeps/grid.py, FIFO)")
    env = ({} if s.ray_worker_niceness is None
           else {"RAY_worker_niceness": str(s.ray_worker_niceness)})
    _calm(s)
    tune = run_tune_trial(ts, work, s.timeout_s, env)
    _progress(f"bare loop again, {s.bare_after}+ epochs (drift check, until "
              f"{MIN_QUIET} quiet ones or {s.quiet_wait:g} s)")
    epoch, deadline = s.epochs + 1, time.monotonic() + s.quiet_wait
    bare_block(bare, range(epoch, epoch + s.bare_after), ideal_too=True)
    epoch += s.bare_after
    while _quiet_epochs(bare) < MIN_QUIET and time.monotonic() < deadline:
        bare_block(bare, range(epoch, epoch + 1), ideal_too=True)
        epoch += 1

    frame = bare.frame()
    steady_bare = frame[frame["epoch"] > 1]
    real = steady_bare[steady_bare["path"] == "data path"]
    ideal = steady_bare[steady_bare["path"] == "ideal"]
    steady_tune = tune.history[tune.history["epoch"] > 1]
    foreign = (tune.sampler.foreign_cores(s.epochs) if tune.sampler is not None
               else [math.nan] * s.epochs)
    # Each side: the median of its quiet epochs (other processes used < QUIET cores), else
    # its fastest epoch (other load only ever slows an epoch down).
    bare_ips, bare_quiet = quiet_stat(list(real["images_per_s"]),
                                      list(real["foreign_cores"]), QUIET)
    ideal_ips, ideal_quiet = quiet_stat(list(ideal["images_per_s"]),
                                        list(ideal["foreign_cores"]), QUIET)
    tune_ips, tune_quiet = quiet_stat(list(steady_tune["images_per_s"]), foreign[1:], QUIET)
    tune_bare = ratio(tune_ips, bare_ips)
    images = bare.images_per_epoch
    tune_wait = data_wait_share(tune.history, images)
    bare_wait = ratio(float(real["data_time_s"].sum()), float(real["seconds"].sum()))
    over = tune_overheads(tune, images)
    cores = _cpu_profile(tune, s.epochs)

    def quiet(n: int, total: int) -> str:
        return f"median of {n}/{total} quiet epochs" if n else f"best of {total}, none quiet"

    where = f"{s.image_size} px, {s.encoder_stages}-stage ResNet50, batch {s.batch_size}, " \
            f"{images} img/epoch, {s.cpus} CPU" + (", 1 GPU" if ts.cuda else "")
    rows = [
        Row("throughput", f"bare loop, data path (img/s; {where})",
            f"{fmt(bare_ips, 1)} ({quiet(bare_quiet, len(real))})"),
        Row("throughput", "bare loop, batches pre-gathered (img/s)",
            f"{fmt(ideal_ips, 1)} ({quiet(ideal_quiet, len(ideal))})"),
        Row("throughput", "Tune trial, train phase (img/s)",
            f"{fmt(tune_ips, 1)} ({quiet(tune_quiet, len(steady_tune))})"),
        Row("throughput", "tune/bare throughput", fmt(tune_bare), ">= 0.90",
            tune_bare >= TUNE_GOAL),
        Row("throughput", "bare data path / pre-gathered (median of paired epochs)",
            fmt(_paired_ratio(real, ideal))),
        Row("throughput", "Tune trial: set-up + reports + checkpoints",
            f"{fmt(over['outside_epochs_s'], 1)} s of {fmt(over['trial_total_s'], 1)} s"),
        Row("throughput", "Tune trial: validation / train phase",
            f"{fmt(over['validation_s'], 1)} s / {fmt(over['train_s'], 1)} s"),
        Row("throughput", "sweep driver wall time (Ray start-up included)",
            f"{fmt(over['driver_wall_s'], 1)} s"),
        Row("data", "data wait, Tune trial (epochs >= 2)", pct(tune_wait), "< 5%",
            tune_wait < DATA_WAIT_GOAL),
        Row("data", "data wait, bare loop (epochs >= 2)", pct(bare_wait), "< 5%",
            bare_wait < DATA_WAIT_GOAL),
    ]

    def epochs(values, loads) -> str:
        return ", ".join(f"{fmt(v, 1)} [{fmt(f, 1)}]"
                         for v, f in zip(values, loads, strict=True))

    all_real = frame[frame["path"] == "data path"]
    notes = [f"per-epoch img/s [cores used by other processes meanwhile]: Tune "
             f"{epochs(tune.history['images_per_s'], foreign)}; bare "
             f"{epochs(all_real['images_per_s'], all_real['foreign_cores'])} (from epoch "
             f"{s.epochs + 1} on: after the Tune run); epoch 1 is warm-up; quiet: < {QUIET} "
             "cores"]
    noisy = [side for side, n in (("the bare loop", bare_quiet), ("the Tune trial", tune_quiet))
             if not n]
    if noisy:
        notes.append("NOISY: other processes used this machine's cores during every epoch of "
                     + " and of ".join(noisy) + ": the ratio compares fastest epochs and is "
                     "not reliable; rerun on an idle machine")
    if cores:
        used = ", ".join(f"{name} {fmt(c)}" for name, c in cores["roles"].items())
        nice = cores["trial_nice"]
        notes.append(f"CPU cores used by the Tune run during epochs 2..{s.epochs} "
                     f"({fmt(cores['seconds'], 1)} s): {used}"
                     + (f"; the trial worker runs at nice {nice}" if nice is not None else ""))
    if tune_bare < TUNE_GOAL:
        notes.append(_diagnosis(tune_bare, tune_wait, bare_wait, cores, s.cpus))
    return rows, notes, tune_bare


def _paired_ratio(real, ideal) -> float:
    """Median over epochs of data-path img/s / pre-gathered img/s of the same epoch (the two
    run back to back), over the epochs where both were quiet when there are any."""
    pairs = real.merge(ideal, on="epoch", suffixes=("", "_ideal"))
    quiet = pairs[(pairs["foreign_cores"] < QUIET) & (pairs["foreign_cores_ideal"] < QUIET)]
    use = quiet if len(quiet) else pairs
    return median(list(use["images_per_s"] / use["images_per_s_ideal"]))


def _calm(s: BenchSettings) -> None:
    """Wait up to --quiet-wait seconds for other processes to leave the cores alone."""
    if s.quiet_wait <= 0:
        return
    waited, calm = wait_for_quiet(s.quiet_wait, QUIET)
    if waited > 5 or not calm:
        _progress(f"waited {waited:.0f} s for a quiet machine"
                  + ("" if calm else ": still busy, going on"))


def _quiet_epochs(bare) -> int:
    frame = bare.frame()
    rows = frame[(frame["path"] == "data path") & (frame["epoch"] > 1)]
    return int((rows["foreign_cores"] < QUIET).sum())


def _cpu_profile(tune, epochs: int) -> dict | None:
    if tune.sampler is None or not tune.sampler.samples:
        return None
    seconds, by_role = tune.sampler.window(1, epochs)
    if seconds <= 0 or not by_role:
        return None
    return {"seconds": seconds, "roles": {k: v / seconds for k, v in by_role.items()},
            "trial_nice": tune.sampler.trial_nice}


def _diagnosis(tune_bare: float, tune_wait: float, bare_wait: float, cores: dict | None,
               cpus: int) -> str:
    parts = [f"GAP: tune/bare {fmt(tune_bare)} < 0.90."]
    if not math.isnan(tune_wait) and tune_wait - bare_wait > 0.05:
        parts.append(f"The trial waits for data {pct(tune_wait)} of its train time against "
                     f"{pct(bare_wait)} bare: the gap is in the data path.")
    else:
        parts.append(f"Data wait is alike ({pct(tune_wait)} vs {pct(bare_wait)}): the gap is "
                     "in compute, i.e. CPU the trial does not get.")
    if cores:
        others = sum(c for name, c in cores["roles"].items() if "trial" not in name)
        parts.append(f"Ray's own processes took {fmt(others)} of {cpus} cores while the "
                     f"trial trained.")
        if cores["trial_nice"]:
            parts.append(f"Ray starts workers at nice {cores['trial_nice']} "
                         "(RAY_worker_niceness), so any other load on the node is served first.")
    return " ".join(parts)


# --------------------------------------------------------------------------- data cache
def cache_section(s: BenchSettings) -> tuple[list[Row], list[str]]:
    from .cache_speed import cache_speedup

    _progress(f"decoded-tile cache vs JPEG decoding per item at {s.cache_size} px")
    c = cache_speedup(s.data, s.cache_size, s.cache_items)
    full_s = c["decode_ms"] * FULL_DATASET_TILES / 1e3
    rows = [
        Row("data", f"decode JPEG image + mask per item ({s.cache_size} px, {c['items']} "
                    f"items)", f"{fmt(c['decode_ms'], 3)} ms"),
        Row("data", "read the same item from the decoded cache", f"{fmt(c['cache_ms'], 3)} ms"),
        Row("data", "decoded-cache speed-up", f"{fmt(c['speedup'], 0)}x"),
    ]
    notes = [f"decoding the full {FULL_DATASET_TILES:,}-tile dataset once at {s.cache_size} px "
             f"would take about {fmt(full_s, 0)} s on this machine (once per machine and size)"]
    return rows + _point_rows(min(300, s.cache_items or 300)), notes


def _point_rows(n_tiles: int) -> list[Row]:
    """A trial's point labels for ``n_tiles`` full-size tiles: seconds per strategy, and how
    they grow with 10x the points (a cost proportional to the points would grow 10x)."""
    from .points_speed import point_sampling_seconds

    few, many = 20, 200
    _progress(f"point labels: {n_tiles} tiles of 256 px, {few} and {many} points per tile")
    rows = []
    for strategy, seconds in point_sampling_seconds(n_tiles, points=(few, many)).items():
        growth = ratio(seconds[many], seconds[few])
        rows.append(Row("data", f"point labels, {n_tiles} tiles x 256 px, {strategy}: {few} / "
                                f"{many} points (s); growth", f"{fmt(seconds[few])} / "
                                f"{fmt(seconds[many])}; {fmt(growth, 1)}x", "< 10x",
                        growth < 10))
    return rows


# --------------------------------------------------------------------------- memory
def memory_section(s: BenchSettings) -> tuple[list[Row], list[str]]:
    from .memory import concurrent_memory, ensure_decoded, memory_summary

    _progress(f"memory of 1 and 2 concurrent trial processes at {s.cache_size} px")
    ensure_decoded(s.data, s.cache_size)
    m = {n: memory_summary(concurrent_memory(s.data, s.cache_size, n)) for n in (1, 2)}
    dataset = m[1]["dataset_bytes"]

    def mb(key: str, digits: int = 0) -> str:
        return f"{fmt(m[1][key] / MB, digits)} / {fmt(m[2][key] / MB, digits)} MB"

    rows = [
        Row("memory", f"decoded dataset ({m[1]['tiles']} tiles, {s.cache_size} px)",
            f"{fmt(dataset / MB, 1)} MB"),
        Row("memory", "per-trial RSS, N=1 / N=2", mb("rss")),
        Row("memory", "per-trial PSS, N=1 / N=2", mb("pss")),
        Row("memory", "dataset in each trial's RSS, N=1 / N=2", mb("dataset_rss", 1)),
        Row("memory", "dataset in each trial's PSS, N=1 / N=2", mb("dataset_pss", 1)),
        Row("memory", "copies of the dataset held by the trials, N=1 / N=2",
            f"{fmt(m[1]['copies'])} / {fmt(m[2]['copies'])}", "1 (not N)",
            abs(m[2]["copies"] - 1) < 0.25 and abs(m[1]["copies"] - 1) < 0.25),
        Row("memory", "per-trial private point labels (50 points)",
            f"{fmt(m[1]['labels_pss'] / MB, 1)} MB"),
    ]
    notes = []
    if not m[1]["memory_mapped"]:
        notes.append("GAP: load_tiles() returned in-memory arrays, not memory maps: each trial "
                     "holds its own copy of the decoded dataset")
    elif m[1]["sharers"] > 1.1:
        notes.append(f"another process maps the same cache files (each page already shared "
                     f"{fmt(m[1]['sharers'], 1)} ways with one trial): copies read low")
    per_tile = m[1]["labels_bytes"] / max(m[1]["tiles"], 1)
    notes.append(f"each trial keeps its point labels sparse (pixel indices and values): "
                 f"{fmt(per_tile, 0)} bytes per tile at 50 points, "
                 f"{fmt(per_tile * FULL_DATASET_TILES / MB, 1)} MB per trial on the full "
                 f"dataset (a dense uint8 map would take {s.cache_size**2 // 1024} KiB per tile)")
    return rows, notes


# --------------------------------------------------------------------------- sweep
def sweep_section(s: BenchSettings, work: Path) -> tuple[list[Row], list[str]]:
    from .sweep_efficiency import SweepSettings, asha_vs_fifo

    sw = SweepSettings(data=s.data, max_tiles=s.sweep_tiles, epochs=s.sweep_epochs,
                       seeds=s.sweep_seeds, cpus=s.cpus)
    _progress(f"ASHA vs FIFO: points {list(sw.points)} x lr {list(sw.lrs)}, "
              f"{sw.seeds} seed(s), {sw.epochs} epochs, {sw.image_size} px")
    r = asha_vs_fifo(sw, work, s.timeout_s)
    cols = r["columns"]

    def label(config):
        return "none" if config is None else ", ".join(f"{c}={config[c]}" for c in cols)

    rows = [
        Row("sweep", f"trial-epochs ASHA / FIFO ({r['asha_trials']} trials each)",
            f"{r['asha_trial_epochs']:g} / {r['fifo_trial_epochs']:g} = {fmt(r['ratio'])}",
            "< 1", r["ratio"] < 1),
        Row("sweep", "same best configuration", "yes" if r["same_best"] else "no", "yes",
            bool(r["same_best"])),
        Row("sweep", "best ASHA / best FIFO", f"{label(r['asha_best'])} / "
                                              f"{label(r['fifo_best'])}"),
        Row("sweep", "driver wall time ASHA / FIFO",
            f"{fmt(r['asha_wall_s'], 1)} / {fmt(r['fifo_wall_s'], 1)} s"),
    ]
    notes = []
    if not r["same_best"]:
        notes.append(f"ASHA's choice scores {fmt(r['asha_choice_in_fifo'], 4)} in the FIFO "
                     f"run against FIFO's best {fmt(r['fifo_best_score'], 4)} "
                     f"(regret {fmt(r['regret'], 4)} {r['metric']})")
    return rows, notes


# --------------------------------------------------------------------------- efficiency
def efficiency_section(s: BenchSettings, work: Path) -> tuple[list[Row], list[str], float]:
    from .grid_efficiency import (
        SLOT_PARTS,
        STARTUP_PARTS,
        efficiency_summary,
        run_default_grid,
        slot_time,
        slots_from_log,
    )

    seeds = "3 (default)" if s.efficiency_seeds is None else str(s.efficiency_seeds)
    _progress(f"sweep efficiency: python sweeps/grid.py, seeds {seeds}")
    run = run_default_grid(work, s.efficiency_seeds, s.timeout_s)
    slots = slots_from_log(run.log.read_text(), s.cpus, len(run.results))
    r = efficiency_summary(run.history, run.wall_s, slots)
    spent = slot_time(run.history, run.started_at, run.ended_at, slots)

    def parts(kind: str) -> str:
        return " / ".join(fmt(r[f"{kind}_{part}"], 2) for part in STARTUP_PARTS) + " s"

    names = " / ".join(STARTUP_PARTS)
    rows = [
        Row("efficiency", f"sweep efficiency = epoch time / (wall x {slots} slots), "
                          f"{r['trials']} trials", fmt(r["efficiency"]),
            f">= {EFFICIENCY_GOAL}", r["efficiency"] >= EFFICIENCY_GOAL),
        Row("efficiency", "sum of trial epoch times / driver wall time",
            f"{fmt(r['epoch_s'], 1)} s / {fmt(r['wall_s'], 1)} s"),
        Row("efficiency", "worker processes / trials", f"{fmt(r['workers'], 0)} / {r['trials']}"),
        Row("efficiency", f"start-up, fresh worker ({r['fresh_trials']} trials): {names}",
            parts("fresh")),
        Row("efficiency", f"start-up, reused worker ({r['reused_trials']} trials): {names}",
            parts("reused")),
        Row("efficiency", "first-epoch warm-up (first epoch - median later epoch)",
            f"{fmt(r['warmup_s'], 2)} s"),
        Row("efficiency", "tile cache entries decoded by trials (the driver decodes)",
            fmt(r["tiles_decoded"], 0)),
        Row("efficiency", "checkpoints written / trial-epochs",
            f"{fmt(r['checkpoints'], 0)} / {r['trial_epochs']}"),
        Row("efficiency", "checkpoint write time per trial-epoch",
            f"{fmt(r['checkpoint_per_epoch_s'], 3)} s"),
        Row("efficiency", "slot-seconds outside epochs: " + " / ".join(SLOT_PARTS.values()),
            " / ".join(fmt(spent[part], 1) for part in SLOT_PARTS) + " s"),
    ]
    notes = [f"sweep efficiency: the slots' idle or overhead time is "
             f"{fmt(r['wall_s'] * slots - r['epoch_s'], 1)} s of {fmt(r['wall_s'] * slots, 1)} "
             "slot-seconds (the slot-seconds row says where: Ray's and the workers' start "
             "before the first trial; trial set-up; reports and checkpoints between epochs; "
             "Ray Tune's switch between trials; a last wave that fills fewer slots; the closing "
             "table and Ray's stop after the last epoch); n/a figures: the trials reported none"]
    if s.efficiency_seeds is not None:
        notes.append(f"sweep efficiency ran a scaled copy of the default grid ({seeds} seed): "
                     f"the {EFFICIENCY_GOAL} goal is for the default grid (3 seeds)")
    return rows, notes, r["efficiency"]


# --------------------------------------------------------------------------- GPU
def gpu_section(s: BenchSettings) -> tuple[list[Row], list[str]]:
    import torch

    if not torch.cuda.is_available():
        return ([Row("gpu", "GPU path", "not measured (no CUDA device)")],
                ["GPU path: not measured (no CUDA device)"])
    from .gpu import STUDY_TARGET_MIN, packed_throughput, precision_throughput, study_minutes

    cfg = TrainConfig(data=s.data, image_size=256, max_tiles=s.gpu_tiles, batch_size=16,
                      encoder_stages=4, pretrained="none", device="cuda")
    _progress("GPU: fp32 vs bf16 autocast + channels_last, 256 px, full ResNet50")
    prec = precision_throughput(cfg, "cuda")
    packed = {}
    for k in (1, 2, 4):
        _progress(f"GPU: {k} trial(s) packed on one GPU")
        packed[k] = packed_throughput(cfg, "cuda", k, s.pack_seconds)
    best = max(packed, key=packed.get)
    minutes = study_minutes(packed[best])
    rows = [
        Row("gpu", "fp32 (img/s, 256 px, full ResNet50, batch 16)", fmt(prec["fp32"], 0)),
        Row("gpu", "bf16 autocast + channels_last (img/s)", fmt(prec["bf16_cl"], 0)),
        Row("gpu", "bf16+CL / fp32", fmt(ratio(prec["bf16_cl"], prec["fp32"]))),
        *[Row("gpu", f"{k} trial(s) on one GPU (total img/s)", fmt(v, 0))
          for k, v in packed.items()],
        Row("gpu", f"full study projected ({best} per GPU)", f"{fmt(minutes, 1)} min",
            f"< {STUDY_TARGET_MIN:g} min", minutes < STUDY_TARGET_MIN),
    ]
    notes = [f"GPU: {torch.cuda.get_device_name(0)}; the projection counts 7 x 10 epochs of "
             "4,086 training images plus validation at a third of a training image's cost"]
    return rows, notes
