"""bench (python -m bench): the pure parts (table, last line, /proc parsing, history arithmetic),
the bench's own loops on tiny data, its CLI errors, and one end-to-end run (slow)."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.__main__ import build_parser, main, settings_from_args
from bench.cache_speed import cache_speedup
from bench.gpu import STUDY_EPOCHS, STUDY_RUNS, STUDY_TRAIN, STUDY_VAL, study_minutes
from bench.memory import memory_summary
from bench.proctree import (
    TRIAL_ROLE,
    cpu_window,
    descendants,
    foreign_cores,
    parse_stat,
    role,
)
from bench.report import (
    Row,
    data_wait_share,
    format_table,
    images_per_epoch,
    last_line,
    median,
    parse_proc_stat_busy,
    parse_smaps,
    parse_smaps_rollup,
    quiet_stat,
    ratio,
    steady_images_per_s,
    wait_for_quiet,
)
from bench.throughput import BareRun, ThroughputSettings
from forest_seg.cli import run_cli
from forest_seg.synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
LAST_LINE = re.compile(r"^tune/bare throughput ratio: \d+\.\d\d$")

SMAPS_ROLLUP = """\
55d0c0a00000-7ffd7e5f3000 ---p 00000000 00:00 0                          [rollup]
Rss:              702144 kB
Pss:              401337 kB
Pss_Dirty:         98304 kB
Pss_Anon:          97000 kB
Pss_File:         304337 kB
Shared_Clean:     400000 kB
Private_Dirty:     98304 kB
"""

SMAPS = """\
7f0000000000-7f0005c70000 r--s 00000000 fd:01 4040991                    /c/tiles/k/images.npy
Size:              94660 kB
Rss:               94660 kB
Pss:               47330 kB
Shared_Clean:      94660 kB
VmFlags: rd mr me ms
7f0006000000-7f0006001000 ---p 00000000 00:00 0
Rss:                   4 kB
Pss:                   4 kB
7f0007000000-7f0007800000 r--s 00000000 fd:01 4040992                    /c/tiles/k/masks.npy
Rss:               30000 kB
Pss:               15000 kB
7f0008000000-7f0008400000 r--s 00800000 fd:01 4040991                    /c/tiles/k/images.npy
Rss:                 100 kB
Pss:                  50 kB
"""


def history(ips, data_time):
    return pd.DataFrame({"epoch": range(1, len(ips) + 1), "images_per_s": ips,
                         "data_time_s": data_time})


# --------------------------------------------------------------------------- pure parts
def test_last_line_is_the_ratio_with_two_decimals():
    assert last_line(0.934) == "tune/bare throughput ratio: 0.93"
    assert last_line(1.0) == "tune/bare throughput ratio: 1.00"
    assert last_line(0.896) == "tune/bare throughput ratio: 0.90"
    assert LAST_LINE.match(last_line(12.3456))
    with pytest.raises(ValueError):
        last_line(math.nan)


def test_ratio_and_median_handle_zero_and_nan():
    assert ratio(9.0, 10.0) == pytest.approx(0.9)
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 2.0))
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, math.nan, 2.0, 3.0]) == 2.5
    assert math.isnan(median([]))


def test_table_aligns_columns_and_marks_goals():
    rows = [Row("throughput", "tune/bare throughput", "0.85", ">= 0.90", False),
            Row("data", "cache speed-up", "33x"),
            Row("data", "data wait", "0.4%", "< 5%", True)]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["section", "quantity", "value", "goal"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].endswith("MISSED") and lines[4].endswith("ok")
    assert lines[3].rstrip().endswith("33x")  # no goal, no verdict
    values = ("0.85", "33x", "0.4%")
    starts = {line.index(value) for line, value in zip(lines[2:], values, strict=True)}
    assert len(starts) == 1  # the value column is aligned


def test_parse_smaps_rollup_reads_bytes_and_skips_the_header():
    fields = parse_smaps_rollup(SMAPS_ROLLUP)
    assert fields["Rss"] == 702144 * 1024
    assert fields["Pss"] == 401337 * 1024
    assert fields["Pss_File"] == 304337 * 1024
    assert len(fields) == 7  # the [rollup] address line is not a field


def test_parse_smaps_sums_mappings_per_file_and_drops_anonymous_ones():
    files = parse_smaps(SMAPS)
    assert set(files) == {"/c/tiles/k/images.npy", "/c/tiles/k/masks.npy"}
    assert files["/c/tiles/k/images.npy"]["Rss"] == (94660 + 100) * 1024
    assert files["/c/tiles/k/images.npy"]["Pss"] == (47330 + 50) * 1024
    assert files["/c/tiles/k/masks.npy"]["Pss"] == 15000 * 1024


def test_data_wait_share_uses_epochs_after_the_first():
    # 100 images per epoch: train seconds 10, 5, 4; data waits 5 (warm-up), 0.5, 0.2.
    frame = history([10.0, 20.0, 25.0], [5.0, 0.5, 0.2])
    assert data_wait_share(frame, 100) == pytest.approx(0.7 / 9.0)
    assert steady_images_per_s(frame) == pytest.approx(22.5)
    assert steady_images_per_s(frame, "best") == 25.0
    assert math.isnan(steady_images_per_s(frame.iloc[:1], "best"))
    assert math.isnan(data_wait_share(frame.iloc[:1], 100))


def test_quiet_stat_prefers_quiet_epochs_and_falls_back_to_the_fastest():
    values, loads = [10.0, 50.0, 48.0, 20.0], [1.5, 0.1, 0.0, 0.9]
    assert quiet_stat(values, loads, 0.25) == (49.0, 2)
    assert quiet_stat(values, [1.0] * 4, 0.25) == (50.0, 0)
    assert quiet_stat([5.0, math.nan], [0.0, 0.0], 0.25) == (5.0, 1)
    assert math.isnan(quiet_stat([], [], 0.25)[0])


def fake_machine(monkeypatch, other_cores: list[float], step_s: float) -> None:
    """A clock that only ``time.sleep`` moves, and a machine whose other processes use
    ``other_cores[k]`` cores during the k-th step of ``step_s`` seconds (this process: none)."""
    import time

    import bench.report

    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr(time, "process_time", lambda: 0.0)
    monkeypatch.setattr(bench.report, "system_busy_seconds",
                        lambda: sum(other_cores[:round(clock[0] / step_s)]) * step_s)


def test_wait_for_quiet_stops_when_calm_for_a_window(monkeypatch):
    # busy, then calm for 2 steps, busy again, then calm for the 3 steps of the window
    fake_machine(monkeypatch, [2.0, 0.1, 0.1, 3.0, 0.1, 0.1, 0.1, 9.0], step_s=0.1)
    waited, calm = wait_for_quiet(5.0, limit=0.5, window_s=0.3, step_s=0.1)
    assert calm and waited == pytest.approx(0.7)


def test_wait_for_quiet_gives_up_at_the_deadline(monkeypatch):
    fake_machine(monkeypatch, [2.0] * 10, step_s=0.1)
    waited, calm = wait_for_quiet(0.5, limit=0.5, window_s=0.3, step_s=0.1)
    assert not calm and waited == pytest.approx(0.5)


def test_proc_stat_busy_counts_steal_and_not_idle():
    text = "cpu  100 5 50 1000 20 1 2 30 0 0\ncpu0 50 2 25 500 10 0 1 15 0 0\nintr 1 2\n"
    assert parse_proc_stat_busy(text) == (188.0, 1208.0)
    with pytest.raises(ValueError):
        parse_proc_stat_busy("intr 1 2\n")


def test_images_per_epoch_drops_a_final_single_tile():
    assert images_per_epoch(33, 16) == 32
    assert images_per_epoch(32, 16) == 32
    assert images_per_epoch(34, 16) == 34


def test_memory_summary_counts_shared_pages_once():
    dataset = 100 * 2**20

    def worker(pss, rss=dataset):
        return {"before": {"Rss": 400, "Pss": 300}, "after": {"Rss": 400 + rss, "Pss": 300 + pss},
                "with_labels": {"Rss": 0, "Pss": 300 + pss + 10}, "tiles": 10,
                "dataset": {"Rss": rss, "Pss": pss}, "memory_mapped": True,
                "dataset_bytes": dataset, "labels_bytes": 10}

    one = memory_summary([worker(dataset)])
    two = memory_summary([worker(dataset // 2), worker(dataset // 2)])
    assert one["copies"] == pytest.approx(1.0) and two["copies"] == pytest.approx(1.0)
    assert two["sharers"] == pytest.approx(2.0) and two["dataset_pss"] == dataset // 2
    assert one["labels_pss"] == 10
    private = memory_summary([{**worker(0, 0), "memory_mapped": False,
                               "after": {"Rss": 400 + dataset, "Pss": 300 + dataset}}] * 2)
    assert private["copies"] == pytest.approx(2.0)  # in-memory arrays: one copy per trial


def test_study_projection():
    images = STUDY_RUNS * STUDY_EPOCHS * (STUDY_TRAIN + STUDY_VAL / 3)
    assert study_minutes(images / 600) == pytest.approx(10.0)
    assert math.isnan(study_minutes(0.0))


# --------------------------------------------------------------------------- /proc parsing
def test_parse_stat_handles_spaces_and_parentheses_in_the_name():
    fields = ["S", "77", *["0"] * 9, "250", "50", "0", "0", "20", "15", "1"]
    st = parse_stat("1234 (ray::Implicit) x) " + " ".join(fields), ticks=100)
    assert (st.pid, st.ppid, st.comm, st.cpu_s, st.nice) == (1234, 77, "ray::Implicit) x",
                                                               3.0, 15)


def test_roles_of_a_ray_process_tree():
    assert role("python sweeps/grid.py", "python", True).startswith("driver")
    assert role("/x/ray/core/src/ray/raylet/raylet --a=1", "raylet", False) == "raylet"
    assert role("/x/gcs/gcs_server --log_dir=/tmp", "gcs_server", False) == "gcs_server"
    assert role("ray::ImplicitFunc.train", "ray::ImplicitFu", False) == TRIAL_ROLE
    assert role("ray::IDLE", "ray::IDLE", False) == "idle ray workers"
    assert "helpers" in role("ray::DashboardAgent", "ray::DashboardA", False)
    assert "helpers" in role("python -u /x/ray/_private/log_monitor.py", "python", False)


def test_descendants_and_cpu_window():
    from bench.proctree import ProcStat

    stats = {pid: ProcStat(pid, ppid, "p", 0.0, 0)
             for pid, ppid in [(10, 1), (11, 10), (12, 11), (13, 1)]}
    assert descendants(stats, 10) == {10, 11, 12}
    roles = {10: "driver", 11: "raylet", 12: TRIAL_ROLE}
    samples = [(0.0, 0, {10: 1.0, 11: 1.0}),
               (1.0, 1, {10: 2.0, 11: 1.5, 12: 3.0}),
               (2.0, 1, {10: 2.5, 11: 2.0, 12: 4.0}),
               (3.0, 2, {10: 3.0, 11: 2.5, 12: 5.0})]
    seconds, used = cpu_window(samples, roles, 1, 2)
    assert seconds == 2.0
    assert used == {TRIAL_ROLE: 2.0, "driver": 1.0, "raylet": 1.0}
    assert cpu_window(samples, roles, 5, 6) == (0.0, {})
    # machine-wide busy CPU-seconds as a 4th element: the rest is other processes' load.
    with_machine = [(*sample, busy) for sample, busy in zip(samples, (0.0, 10.0, 14.0, 16.0),
                                                            strict=True)]
    loads = foreign_cores(with_machine, roles, 3)
    assert loads[0] == pytest.approx(10.0 - 4.5)  # epoch 1: 10 s busy, the tree 4.5 s, in 1 s
    assert loads[1] == pytest.approx((6.0 - 4.0) / 2.0)
    assert math.isnan(loads[2])  # never reached


# --------------------------------------------------------------------------- CLI
def parse(*argv):
    return settings_from_args(build_parser().parse_args(list(argv)))


def test_quick_and_full_presets_set_the_same_sizes():
    from bench.__main__ import FULL, QUICK
    from bench.sections import BenchSettings

    assert set(QUICK) == set(FULL)
    assert set(QUICK) <= set(BenchSettings.__dataclass_fields__)


def test_quick_settings_and_overrides(tmp_path):
    data = make_synthetic_dataset(tmp_path / "d", n=8, size=32, seed=1)
    s = parse("--quick", "--data", str(data), "--epochs", "3", "--cpus", "1")
    assert (s.image_size, s.epochs, s.cpus, s.cache_items) == (64, 3, 1, 128)
    assert s.data == str(data.resolve())
    assert parse("--data", str(data)).image_size == 128  # the full defaults


@pytest.mark.parametrize("argv, culprit", [
    (["--epochs", "1"], "--epochs 1"),
    (["--encoder-stages", "7"], "--encoder-stages 7"),
    (["--cpus", "0"], "--cpus 0"),
    (["--image-size", "abc"], "--image-size"),
    (["--skip", "everything"], "--skip"),
    (["--data", "/no/such/folder"], "/no/such/folder"),
    (["--ray-worker-niceness", "40"], "--ray-worker-niceness 40"),
    (["--quiet-wait", "-1"], "--quiet-wait -1"),
])
def test_bad_flags_end_with_one_clear_line(argv, culprit, capsys):
    assert run_cli(lambda: main(["--quick", *argv])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and culprit in err[0]


def test_tune_and_bare_runs_share_one_config():
    """The flags given to sweeps/grid.py build the same trial config as the bare loop's."""
    from forest_seg.sweep.flags import base_config, build_parser, launch_from_args

    ts = ThroughputSettings(data="/no/such/dataset", image_size=48, max_tiles=40, batch_size=8,
                            encoder_stages=1, epochs=3, cpus=2)
    args, rest = build_parser("grid", "").parse_known_args(ts.grid_flags())
    assert "--points" in rest and "--lrs" in rest  # grid.py's own flags
    fixed = base_config(args, [{"CPU": 2.0, "GPU": 0.0}], "grid", several=True).to_dict()
    bare = ts.config().to_dict()
    for name in ("data", "image_size", "max_tiles", "batch_size", "encoder_stages", "epochs",
                 "pretrained", "device", "head", "gamma", "num_workers"):
        assert fixed[name] == bare[name], name
    launch = launch_from_args(args)
    assert launch.cpus_per_trial == bare["threads"] == 2
    assert args.scheduler == "fifo" and launch.max_concurrent == 1


@pytest.mark.slow
def test_the_bench_never_imports_ray():
    code = ("import sys, bench.__main__, bench.sections, "
            "bench.throughput, bench.memory, bench.gpu, "
            "bench.sweep_efficiency, bench.cache_speed; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- tiny real runs
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("bench"), n=12, size=32, seed=2)


def test_point_sampling_is_timed_per_strategy_and_point_count():
    from bench.points_speed import point_sampling_seconds

    seconds = point_sampling_seconds(n_tiles=2, size=16, points=(1, 4),
                                     strategies=("balanced", "uniform"))
    assert {k: sorted(v) for k, v in seconds.items()} == {"balanced": [1, 4],
                                                          "uniform": [1, 4]}
    assert all(t > 0 for per_count in seconds.values() for t in per_count.values())


def test_cache_speedup_times_both_paths(tiny_data):
    result = cache_speedup(tiny_data, 32, n_items=6)
    assert result["items"] == 6 and result["dataset_tiles"] == 12
    assert result["decode_ms"] > 0 and result["cache_ms"] > 0
    assert result["speedup"] == pytest.approx(result["decode_ms"] / result["cache_ms"])


def test_bare_loop_trains_on_the_data_path_and_pre_gathered(tiny_data):
    torch.set_num_threads(1)
    ts = ThroughputSettings(data=str(tiny_data), image_size=32, max_tiles=None, batch_size=4,
                            encoder_stages=1, epochs=2, cpus=1)
    run = BareRun.create(ts.config())
    before = [p.detach().clone() for p in run.model.parameters()]
    real = run.epoch(1)
    ideal = run.epoch(2, ideal=True)
    assert real["images"] == ideal["images"] == run.images_per_epoch == len(run.data.train)
    assert real["path"] == "data path" and ideal["path"] == "ideal"
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters(),
                                                          strict=True))
    assert list(run.frame()["epoch"]) == [1, 2]


def test_gpu_precision_code_path_runs_on_cpu(tiny_data):
    from bench.gpu import precision_throughput
    from forest_seg.config import TrainConfig

    cfg = TrainConfig(data=str(tiny_data), image_size=32, batch_size=4, encoder_stages=1,
                      pretrained="none", device="cpu")
    result = precision_throughput(cfg, "cpu", epochs=1)
    assert set(result) == {"fp32", "bf16_cl"} and all(v > 0 for v in result.values())


@pytest.mark.slow
def test_gpu_packing_code_path_runs_on_cpu(tiny_data):
    from bench.gpu import packed_throughput
    from forest_seg.config import TrainConfig

    cfg = TrainConfig(data=str(tiny_data), image_size=32, batch_size=4, encoder_stages=1,
                      pretrained="none", device="cpu")
    assert packed_throughput(cfg, "cpu", trials=2, seconds=0.5) > 0


@pytest.mark.slow
def test_concurrent_trials_hold_the_dataset_once(tiny_data):
    from bench.memory import concurrent_memory, ensure_decoded

    ensure_decoded(tiny_data, 48)
    two = memory_summary(concurrent_memory(tiny_data, 48, 2, points=5))
    assert two["memory_mapped"]
    assert two["dataset_bytes"] == 12 * 48 * 48 * 4
    assert two["copies"] == pytest.approx(1.0, abs=0.1)
    assert two["sharers"] == pytest.approx(2.0, abs=0.2)


@pytest.mark.slow
def test_bench_quick_end_to_end(tiny_data, tmp_path):
    """The CLI through a real Ray Tune trial (other parts skipped): table and last line."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--data", str(tiny_data),
         "--image-size", "32", "--max-tiles", "12", "--batch-size", "4", "--encoder-stages",
         "1", "--epochs", "2", "--cpus", "1", "--skip", "memory", "sweep", "efficiency", "gpu",
         "--quiet-wait", "0", "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert LAST_LINE.match(lines[-1]), lines[-1]
    assert float(lines[-1].rsplit(" ", 1)[1]) > 0
    table = done.stdout
    for quantity in ("tune/bare throughput", "data wait, Tune trial", "decoded-cache speed-up",
                     "bare loop, data path"):
        assert quantity in table
    assert (tmp_path / "work" / "throughput" / "history.csv").is_file()


def _report(results, value):
    results.put(value)


def _fail(results, value):
    raise SystemExit(3)


def test_collect_results_returns_each_workers_report_and_fails_fast_on_a_dead_worker():
    import multiprocessing as mp

    from bench.runs import BenchError, collect_results

    ctx = mp.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_report, args=(results, i)) for i in range(2)]
    for p in procs:
        p.start()
    assert sorted(collect_results("test", results, procs, timeout=60)) == [0, 1]
    # a worker that dies without reporting ends the wait well before the 600 s timeout,
    # naming the exit codes (the sibling that reported may not have exited yet: None)
    results = ctx.Queue()
    procs = [ctx.Process(target=_report, args=(results, 0)),
             ctx.Process(target=_fail, args=(results, 1))]
    for p in procs:
        p.start()
    with pytest.raises(BenchError, match=r"test: 1 worker\(s\) did not report \(a worker "
                                         r"failed\); exit codes \[(0|None), 3\]"):
        collect_results("test", results, procs, timeout=600)
    assert all(not p.is_alive() for p in procs)
