"""The prepared GPU check (``python -m bench.gpu``), rehearsed on a CPU: its tiny mode runs
end to end without Ray, Optuna, pandas, scipy or matplotlib; its parts, guards and
projection are checked against hand-computed figures."""

import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import bench.gpu
from bench.gpu import (
    STUDY_EPOCHS,
    STUDY_SEEDS,
    STUDY_TRAIN,
    STUDY_VAL,
    JsonLines,
    guarded,
    main,
    study_projection,
)
from bench.gpu_procs import WorkerError, WorkerProcess, mps_daemon
from bench.gpu_steps import StepTimes, TimedModel, time_training
from forest_seg.batches import prepare_trial_data
from forest_seg.config import TrainConfig
from forest_seg.errors import ConfigError, DatasetError
from forest_seg.model import build_model
from forest_seg.synthetic import make_synthetic_dataset
from forest_seg.train import epoch_order, train_epoch

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_GPU_MACHINES = ("ray", "optuna", "pandas", "scipy", "matplotlib")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("gpu-check"), n=12, size=32, seed=2)


def tiny_config(data: Path) -> TrainConfig:
    return TrainConfig(data=str(data), image_size=32, batch_size=4, encoder_stages=1,
                       pretrained="none", device="cpu")


def run_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """``python -m bench.gpu ARGS`` where importing any of ABSENT_ON_GPU_MACHINES fails (in
    the check and in every process it starts); returns the run and its --out lines."""
    blocked = tmp_path / "blocked"
    for name in ABSENT_ON_GPU_MACHINES:
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ImportError('{name} is absent on the GPU machines')\n")
    out = tmp_path / "gpu.jsonl"
    env = {**os.environ, "PYTHONPATH": f"{blocked}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--out", str(out), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    stdout = [json.loads(line) for line in done.stdout.splitlines()]
    assert stdout == lines, done.stderr  # the same lines on stdout and in --out
    return done, lines


def test_blocked_modules_cannot_be_imported(tmp_path):
    """The premise of the tiny run below: the blocking really blocks."""
    done, _ = run_check(tmp_path, "--budget-s", "bad")
    assert done.returncode != 0 and "--budget-s" in done.stderr
    code = "import pandas"
    blocked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(tmp_path / "blocked")})
    assert "absent on the GPU machines" in blocked.stderr


@pytest.mark.slow
def test_tiny_check_runs_every_part_without_ray_or_pandas(tmp_path, tiny_data):
    done, lines = run_check(tmp_path, "--device", "cpu", "--tiny", "--data", str(tiny_data))
    assert done.returncode == 0, done.stderr
    by_section: dict[str, list[dict]] = {}
    for line in lines:
        assert {"section", "elapsed_s"} <= line.keys()
        by_section.setdefault(line["section"], []).append(line)
    assert list(by_section) == ["environment", "settings", "precision", "evaluation",
                                "checkpoint", "startup", "packed", "projection", "done"]
    assert by_section["done"][0]["failed"] == []
    assert by_section["environment"][0]["torch"] == torch.__version__
    cfg = TrainConfig.from_dict(by_section["settings"][0]["config"])
    assert (cfg.image_size, cfg.encoder_stages, cfg.device) == (32, 1, "cpu")
    data = prepare_trial_data(cfg)
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)

    precision = {row["variant"]: row for row in by_section["precision"]}
    assert list(precision) == ["fp32", "bf16", "bf16_cl"]
    for row in precision.values():
        assert row["steps"] == row["timed_epochs"] * steps_per_epoch
        assert row["images_per_s"] > 0 and row["wall_ms_per_step"] > 0
        # a CPU has no CUDA events, sync warnings or allocator statistics
        assert row["device_ms_per_step"] is row["syncs_per_epoch"] is None
        assert row["max_memory_allocated_bytes"] is None
    assert [row["images"] for row in by_section["evaluation"]] == [len(data.val)] * 3

    params = sum(p.numel() for p in build_model("linear", encoder_stages=1).parameters())
    checkpoint = by_section["checkpoint"][0]
    assert checkpoint["bytes"] > 3 * 4 * params  # fp32 weights and Adam's two moments
    assert len(checkpoint["seconds"]) == 2

    startup = by_section["startup"][0]
    parts = ("process_s", "imports_s", "device_s", "data_s", "model_s", "first_step_s")
    assert all(startup[p] >= 0 for p in parts)
    assert sum(startup[p] for p in parts) <= startup["total_s"] + 0.1  # parts of one span

    packed = by_section["packed"]
    measured = [row for row in packed if "images_per_s" in row]
    assert [(row["trials"], row["mps"]) for row in measured] == [(1, False), (2, False)]
    for row in measured:
        assert len(row["per_trial_images_per_s"]) == row["trials"]
        assert row["images_per_s"] == pytest.approx(sum(row["per_trial_images_per_s"]))
    assert packed[-1] == {**packed[-1], "mps": True, "skipped": "CUDA MPS needs a CUDA device"}

    projection = by_section["projection"][0]
    best = max(measured, key=lambda row: row["images_per_s"])
    assert projection["packed_trials"] == best["trials"]
    assert projection["train_s"] == pytest.approx(
        STUDY_SEEDS * 7 * STUDY_EPOCHS * STUDY_TRAIN / best["images_per_s"])
    parts_s = sum(projection[k] for k in ("train_s", "validation_s", "startup_s",
                                          "checkpoint_s"))
    assert projection["total_min"] == pytest.approx(parts_s / 60)


@pytest.fixture
def failing_workers(monkeypatch):
    """The check's processes replaced: the environment reports a CPU; every other part
    fails as a crashed worker would."""
    def stream_worker(args, timeout_s, on_line, env=None):
        if args[0] != "environment":
            raise WorkerError(f"exit status 1: {args[0]} crashed")
        on_line({"section": "environment", "cuda_available": False, "cpus": 2})

    def packed_run(args, trials, timeout_s, env=None):
        raise WorkerError(f"exit status 1: {trials} packed trial(s) crashed")

    monkeypatch.setattr(bench.gpu, "stream_worker", stream_worker)
    monkeypatch.setattr(bench.gpu, "packed_run", packed_run)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_parts_that_fail_write_error_lines_and_the_check_goes_on(tmp_path, failing_workers):
    assert main(["--device", "cpu", "--tiny", "--out", str(tmp_path / "gpu.jsonl")]) == 1
    lines = read_lines(tmp_path / "gpu.jsonl")
    errors = [(line["section"], line.get("trials"), line["error"]) for line in lines
              if "error" in line]
    assert errors == [
        ("precision", None, "WorkerError: exit status 1: precision crashed"),
        ("startup", None, "WorkerError: exit status 1: trial crashed"),
        ("packed", 1, "WorkerError: exit status 1: 1 packed trial(s) crashed"),
        ("packed", 2, "WorkerError: exit status 1: 2 packed trial(s) crashed"),
        ("projection", None, "ValueError: no training rate measured (no packed or "
                             "precision bf16_cl line)"),
    ]
    assert lines[-1]["section"] == "done"
    assert lines[-1]["failed"] == ["packed", "precision", "projection", "startup"]


def test_a_budget_too_small_skips_the_parts_and_still_closes(tmp_path, failing_workers):
    assert main(["--device", "cpu", "--tiny", "--budget-s", "1",
                 "--out", str(tmp_path / "gpu.jsonl")]) == 1
    lines = read_lines(tmp_path / "gpu.jsonl")
    skipped = [(line["section"], line.get("trials")) for line in lines[:-1]
               if "skipped" in line]
    # too little time: nothing starts, so nothing crashes; MPS is skipped on a CPU anyway
    assert skipped == [("precision", None), ("startup", None), ("packed", 1), ("packed", 2),
                       ("packed", None)]
    assert [line["section"] for line in lines if "error" in line] == ["projection"]
    assert lines[-1] == {**lines[-1], "section": "done", "failed": ["projection"],
                         "skipped": ["packed", "precision", "startup"]}


def test_projection_from_hand_computed_figures():
    results = {
        ("packed", (1, False)): {"images_per_s": 100.0},
        ("packed", (2, False)): {"images_per_s": 150.0},
        ("packed", (4, False)): {"images_per_s": 140.0},
        ("packed", (1, True)): None,  # skipped
        ("precision", "bf16_cl"): {"images_per_s": 90.0},
        ("evaluation", "bf16_cl"): {"images_per_s": 300.0},
        ("startup", None): {"total_s": 10.0},
        ("checkpoint", None): {"seconds": [0.5, 0.7, 0.6]},
    }
    p = study_projection(results)
    assert (p["trials"], p["packed_trials"], p["mps"]) == (21, 2, False)
    assert p["val_images_per_s"] == pytest.approx(300 * 150 / 100)  # packing gain 1.5
    assert p["train_s"] == pytest.approx(21 * 10 * 4086 / 150)
    assert p["validation_s"] == pytest.approx(21 * 10 * 1022 / 450)
    assert p["startup_s"] == pytest.approx(11 * 10.0)  # 11 waves of 2 trials
    assert p["checkpoint_s"] == pytest.approx(21 * 10 * 0.6 / 2)
    assert p["total_min"] == pytest.approx(
        (21 * 10 * 4086 / 150 + 21 * 10 * 1022 / 450 + 110 + 63) / 60)

    alone = study_projection({("precision", "bf16_cl"): {"images_per_s": 90.0}})
    assert alone["packed_trials"] == 1 and alone["startup_s"] == alone["checkpoint_s"] == 0
    assert alone["validation_s"] == pytest.approx(21 * 10 * STUDY_VAL / (90 * 3))
    with pytest.raises(ValueError, match="no training rate"):
        study_projection({("startup", None): {"total_s": 1.0}})


def test_a_failing_part_writes_an_error_line_and_the_next_runs(tmp_path):
    stream = io.StringIO()
    lines = JsonLines(tmp_path / "out" / "gpu.jsonl", stream)

    def broken():
        raise RuntimeError("CUDA out of memory")

    assert guarded(lines, "packed", broken, trials=7, mps=True) is None
    assert guarded(lines, "checkpoint", lambda: lines.write("checkpoint", bytes=float("nan")))
    lines.close()
    written = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [json.loads(line) for line in (tmp_path / "out" / "gpu.jsonl").open()] == written
    assert written[0] == {**written[0], "section": "packed", "trials": 7, "mps": True,
                          "error": "RuntimeError: CUDA out of memory"}
    assert written[1] == {**written[1], "section": "checkpoint", "bytes": None}  # NaN -> null


def test_bad_arguments_name_the_culprit(tmp_path):
    with pytest.raises(ConfigError, match="--budget-s 0"):
        main(["--budget-s", "0"])
    with pytest.raises(ConfigError, match="--max-tiles 2"):
        main(["--max-tiles", "2"])
    with pytest.raises(DatasetError, match="nowhere"):
        main(["--data", str(tmp_path / "nowhere")])
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="--out .*a-file/gpu.jsonl: cannot write there"):
        main(["--out", str(tmp_path / "a-file" / "gpu.jsonl")])


def test_a_worker_past_its_time_is_killed_and_a_failed_one_quotes_its_stderr(tmp_path):
    slow = WorkerProcess(["trial", "--device", "cpu"], None, tmp_path / "slow.log")
    with pytest.raises(WorkerError, match="no result within"):
        slow.next_line(time.monotonic() + 0.2)  # importing torch alone takes longer
    slow.close()
    assert slow.proc.returncode < 0  # killed, not finished
    bad = WorkerProcess(["calibrate"], None, tmp_path / "bad.log")
    with pytest.raises(WorkerError, match="exit status 2.*invalid choice: 'calibrate'"):
        bad.next_line(time.monotonic() + 60)
    bad.close()


def fake_mps_control(tmp_path: Path, start_status: int = 0) -> Path:
    """A stand-in for nvidia-cuda-mps-control that logs its calls: ``-d`` (start, with the
    pipe and log folders it was given) and the commands read on stdin."""
    script = tmp_path / "nvidia-cuda-mps-control"
    log = tmp_path / "mps-calls.log"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-d" ]; then echo "start $CUDA_MPS_PIPE_DIRECTORY '
        f'$CUDA_MPS_LOG_DIRECTORY" >> {log}; echo "cannot start" >&2; exit {start_status}; fi\n'
        f'read command; echo "$command" >> {log}\n')
    script.chmod(0o755)
    return script


def test_mps_daemon_is_private_and_stopped_with_quit(tmp_path):
    control = fake_mps_control(tmp_path)
    with mps_daemon(str(control)) as env:
        pipe, logs = Path(env["CUDA_MPS_PIPE_DIRECTORY"]), Path(env["CUDA_MPS_LOG_DIRECTORY"])
        assert pipe.is_dir() and logs.is_dir()
        assert (tmp_path / "mps-calls.log").read_text() == f"start {pipe} {logs}\n"
    assert (tmp_path / "mps-calls.log").read_text() == f"start {pipe} {logs}\nquit\n"
    assert not pipe.exists()  # its temporary folder is gone


def test_mps_daemon_that_does_not_start_is_an_error(tmp_path):
    control = fake_mps_control(tmp_path, start_status=1)
    with pytest.raises(WorkerError, match="-d failed with exit status 1: cannot start"):
        with mps_daemon(str(control)):
            pytest.fail("the block must not run without a daemon")
    assert "quit" not in (tmp_path / "mps-calls.log").read_text()


def test_step_times_count_every_training_step_and_leave_no_hook(tiny_data):
    torch.set_num_threads(1)
    cfg = tiny_config(tiny_data)
    data = prepare_trial_data(cfg)
    run = TimedModel.build(cfg, "bf16_cl", torch.device("cpu"))
    with StepTimes(run.model, run.optimizer, run.device) as steps:
        train_epoch(run.cfg, run.model, run.optimizer, data.train, run.device,
                    epoch_order(cfg, 1, len(data.train)))
    n_batches = math.ceil(len(data.train) / cfg.batch_size)
    assert steps.steps == n_batches and len(steps.host_ms()) == n_batches
    assert all(ms > 0 for ms in steps.host_ms()) and steps.device_ms() is None
    assert not run.model._forward_pre_hooks and not run.optimizer._optimizer_step_post_hooks
    timed = time_training(run, data, max_epochs=2, deadline=math.inf)
    assert timed["timed_epochs"] == 2 and timed["steps"] == 2 * n_batches
    assert timed["images_per_s"] == pytest.approx(
        2 * len(data.train) / (timed["wall_ms_per_step"] * timed["steps"] / 1e3))
