"""fit(): determinism, resume equivalence, divergence, reporting; trainable(); the train CLI."""

import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from forest_seg import train as train_module
from forest_seg.baselines import BASELINE_KEYS
from forest_seg.batches import SplitData, prepare_trial_data
from forest_seg.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from forest_seg.config import TrainConfig
from forest_seg.data import load_tiles, split_indices
from forest_seg.model import build_model
from forest_seg.points import IGNORE_INDEX, SparsePoints
from forest_seg.synthetic import make_synthetic_dataset
from forest_seg.train import fit, trainable

TIMING_KEYS = {"epoch_time_s", "finished_at", "images_per_s", "data_time_s"}
REPORTED_KEYS = {
    "epoch", "train_loss", "val_loss", "val_iou", "val_miou", "val_dice", "val_precision",
    "val_recall", "val_accuracy", "lr", "epoch_time_s", "images_per_s", "data_time_s",
    "diverged", "pretrained_loaded", "train_tiles",
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("tiny"), n=24, size=32, seed=3)


@pytest.fixture
def tiny_cfg(tiny_data) -> TrainConfig:
    return TrainConfig(
        data=str(tiny_data), image_size=32, batch_size=8, epochs=3, points=20, lr=1e-3,
        encoder_stages=1, pretrained="none", device="cpu", threads=1, seed=7,
    )


def without_timing(history):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS and not k.startswith("startup_")}
            for row in history]


def run(cfg, **kwargs):
    history = []
    final = fit(cfg, lambda metrics, checkpoint_state=None: history.append(metrics), **kwargs)
    return final, history


def test_reports_every_epoch_with_the_contract_metrics(tiny_cfg):
    final, history = run(tiny_cfg)
    assert [m["epoch"] for m in history] == [1, 2, 3]
    assert final == history[-1]
    for metrics in history:
        assert REPORTED_KEYS <= set(metrics)
        assert 0.0 <= metrics["val_miou"] <= 1.0 and 0.0 <= metrics["val_iou"] <= 1.0
        assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])
        assert metrics["diverged"] is False and metrics["pretrained_loaded"] is False
        assert metrics["lr"] == pytest.approx(1e-3)
        assert metrics["images_per_s"] > 0 and metrics["data_time_s"] >= 0
        assert metrics["train_tiles"] == 19  # what the trial's labels cost is priced on
    # 24 tiles, 20% validation -> 19 training tiles: 8 + 8 + 3 per epoch, all trained on.
    assert history[0]["train_loss"] != history[-1]["train_loss"]


def test_same_config_twice_gives_the_same_history(tiny_cfg):
    cfg = tiny_cfg.replace(epochs=2)
    assert without_timing(run(cfg)[1]) == without_timing(run(cfg)[1])
    other_seed = without_timing(run(cfg.replace(seed=8))[1])
    assert other_seed != without_timing(run(cfg)[1])


def test_resumed_run_ends_with_the_same_history(tiny_cfg, tmp_path):
    tiny_cfg = tiny_cfg.replace(checkpoint_every=1)  # a checkpoint after epoch 1 to resume from
    _, uninterrupted = run(tiny_cfg)

    states = []
    first_epoch = []
    with pytest.raises(KeyboardInterrupt):
        def stop_after_first(metrics, checkpoint_state=None):
            save_checkpoint(tmp_path / CHECKPOINT_FILE, checkpoint_state)
            first_epoch.append(metrics)
            raise KeyboardInterrupt  # the process dies right after checkpoint 1
        fit(tiny_cfg, stop_after_first)
    state = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert state["epoch"] == 1 and state["config"] == tiny_cfg.to_dict()

    resumed = []

    def keep(metrics, checkpoint_state=None):
        resumed.append(metrics)
        states.append(checkpoint_state)

    fit(tiny_cfg, keep, resume_state=state)
    assert [m["epoch"] for m in resumed] == [2, 3]
    assert without_timing(first_epoch + resumed) == without_timing(uninterrupted)
    assert without_timing(states[-1]["history"]) == without_timing(uninterrupted)


def test_resuming_a_finished_run_reports_its_last_epoch_again(tiny_cfg):
    history, states = [], []

    def keep(metrics, checkpoint_state=None):
        history.append(metrics)
        states.append(checkpoint_state)

    fit(tiny_cfg, keep)
    again = []
    final = fit(tiny_cfg, lambda metrics, checkpoint_state=None: again.append(metrics),
                resume_state=states[-1])
    assert len(again) == 1 and without_timing(again) == without_timing(history[-1:])
    assert final["epoch"] == 3


def new_best_epochs(reports) -> set[int]:
    """The epochs whose val mIoU beat every earlier one (each saves: the best model is kept)."""
    best, out = -1.0, set()
    for m in reports:
        if m["val_miou"] > best:
            best, out = m["val_miou"], out | {m["epoch"]}
    return out


def test_checkpoint_every_controls_when_states_are_made(tiny_cfg):
    calls = []
    fit(tiny_cfg.replace(checkpoint_every=2),
        lambda metrics, checkpoint_state=None: calls.append(
            (metrics, checkpoint_state and checkpoint_state["epoch"])))
    saved = {epoch for _, epoch in calls if epoch is not None}
    # every 2nd epoch and the last, and each new best; a state holds its own epoch
    assert saved == {2, 3} | new_best_epochs(m for m, _ in calls)
    assert all(epoch in (None, m["epoch"]) for m, epoch in calls)


@pytest.mark.parametrize("changes, always", [
    ({}, {3}),  # the default policy on a short trial: the last epoch (and each new best)
    ({"checkpoint_minutes": 0}, {1, 2, 3}),  # 0 minutes between checkpoints: every epoch
])
def test_checkpoint_policy_decides_which_epochs_save(tiny_cfg, changes, always):
    reports, saved = [], []

    def keep(metrics, checkpoint_state=None):
        reports.append(metrics)
        if checkpoint_state:
            saved.append(checkpoint_state["epoch"])

    fit(tiny_cfg.replace(**changes), keep)
    assert set(saved) == always | new_best_epochs(reports)


def test_only_the_first_report_carries_the_start_up_parts(tiny_cfg):
    import os

    _, history = run(tiny_cfg)
    startup = {k: v for k, v in history[0].items() if k.startswith("startup_")}
    for part in ("process", "imports", "data", "points", "baselines", "model"):
        assert startup[f"startup_{part}_s"] >= 0, part
    assert startup["startup_worker_pid"] == os.getpid()
    assert all(not k.startswith("startup_") for m in history[1:] for k in m)
    _, again = run(tiny_cfg)  # a second trial in this process: nothing paid twice
    assert again[0]["startup_worker_trial"] == startup["startup_worker_trial"] + 1
    assert again[0]["startup_process_s"] == again[0]["startup_imports_s"] == 0.0
    assert again[0]["startup_tiles_mapped"] == startup["startup_tiles_mapped"]


def test_absurd_learning_rate_diverges_cleanly(tiny_cfg):
    final, history = run(tiny_cfg.replace(lr=1e35, epochs=5))
    # the first step overflows: epoch 1 of 5 is reported diverged and ends the trial
    # (a later divergence: test_a_nan_loss_mid_epoch_ends_the_trial_at_that_epoch)
    assert [(m["epoch"], m["diverged"]) for m in history] == [(1, True)]
    assert history[-1] is final
    # a diverged model has no score: never the score of argmax over NaN logits
    for key in train_module.VAL_KEYS:
        assert math.isnan(final[key]), key
    assert math.isfinite(final["baseline_colour_miou"])  # the baselines need no model


def test_every_epoch_carries_the_trials_baselines(tiny_cfg):
    _, history = run(tiny_cfg)
    first = {k: history[0][k] for k in BASELINE_KEYS}
    assert all({k: m[k] for k in BASELINE_KEYS} == first for m in history)
    assert 0 < first["baseline_all_forest_miou"] <= 0.5  # all forest: non-forest IoU is 0
    assert 0 <= first["baseline_colour_miou"] <= 1


def split_of(images, masks, labels):
    return SplitData(images, masks, np.arange(len(images)), SparsePoints.from_dense(labels))


def test_validation_without_labelled_points_is_not_divergence(tiny_cfg):
    cfg = tiny_cfg.replace(batch_size=2)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    masks = rng.integers(0, 2, (4, 32, 32), dtype=np.uint8)
    unlabelled = np.full((4, 32, 32), IGNORE_INDEX, dtype=np.uint8)
    model = build_model(head="linear", pretrained="none", encoder_stages=1)
    scores = train_module.evaluate(cfg, model, split_of(images, masks, unlabelled),
                                   torch.device("cpu"))
    assert scores["diverged"] is False and math.isnan(scores["val_loss"])
    assert 0 <= scores["val_miou"] <= 1  # the dense masks still score the model


def test_train_loss_is_averaged_per_labelled_pixel(tiny_cfg, monkeypatch):
    """Tiles with 1, 1, 1 and 5 labelled pixels in batches of 2: the loss of a batch is set
    to its labelled count, so the epoch's loss is sum(count^2) / sum(count) = (4 + 36) / 8."""
    def fake_loss(logits, labels, **kwargs):
        return logits.sum() * 0 + (labels != IGNORE_INDEX).sum().float()

    monkeypatch.setattr(train_module, "partial_focal_ce", fake_loss)
    cfg = tiny_cfg.replace(batch_size=2)
    images = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    masks = np.zeros((4, 32, 32), dtype=np.uint8)
    labels = np.full((4, 32, 32), IGNORE_INDEX, dtype=np.uint8)
    labels[:, 0, 0] = 0
    labels[3, 1, :4] = 1
    model = build_model(head="linear", pretrained="none", encoder_stages=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    trained = train_module.train_epoch(cfg, model, optimizer, split_of(images, masks, labels),
                                       torch.device("cpu"), torch.arange(4))
    assert trained["train_loss"] == pytest.approx(40 / 8)  # per image it would be 3.5


def test_dense_supervision_trains_on_every_pixel(tiny_cfg, monkeypatch):
    seen = []
    original = train_module.partial_focal_ce

    def spy(logits, labels, **kwargs):
        seen.append(int((labels != 255).sum()))
        return original(logits, labels, **kwargs)

    monkeypatch.setattr(train_module, "partial_focal_ce", spy)
    run(tiny_cfg.replace(points=0, epochs=1))
    assert seen[0] == 8 * 32 * 32  # first training batch: 8 tiles, every pixel labelled


def test_points_are_fixed_for_the_whole_run(tiny_cfg, monkeypatch):
    calls = []
    original = train_module.prepare_trial_data
    monkeypatch.setattr(train_module, "prepare_trial_data",
                        lambda cfg, clock=None: calls.append(cfg) or original(cfg, clock))
    run(tiny_cfg)
    assert len(calls) == 1  # labels drawn once per trial, not per epoch


def test_trainable_checkpoints_and_resumes_through_tune(tiny_cfg, tmp_path, monkeypatch):
    from ray import tune

    reports = []

    def fake_report(metrics, checkpoint=None):
        saved = None
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                saved = load_checkpoint(Path(folder) / CHECKPOINT_FILE)
        reports.append((metrics, saved))

    monkeypatch.setattr(tune, "report", fake_report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    trainable(tiny_cfg.replace(epochs=2, checkpoint_every=1).to_dict())
    assert [m["epoch"] for m, _ in reports] == [1, 2]
    assert all(state is not None and state["epoch"] == m["epoch"] for m, state in reports)

    first = reports[0][1]
    folder = tmp_path / "from-tune"
    save_checkpoint(folder / CHECKPOINT_FILE, first)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(folder))
    reports.clear()
    trainable(tiny_cfg.replace(epochs=2, checkpoint_every=1).to_dict())
    assert [m["epoch"] for m, _ in reports] == [2]  # epoch 1 came from the checkpoint


def test_a_trial_resumed_from_its_finishing_checkpoint_re_reports_its_epochs(tiny_cfg, tmp_path,
                                                                           monkeypatch):
    """The driver may have stopped after a trial's last checkpoint but before it recorded that
    epoch: resumed from it, the trial trains nothing and reports that epoch again, carrying
    every epoch the checkpoint holds (RESTORED_EPOCHS), so the results writer can record it."""
    from ray import tune

    from forest_seg.results import RESTORED_EPOCHS

    reports = []

    def fake_report(metrics, checkpoint=None):  # keeps the state: Ray's folder is temporary
        state = None if checkpoint is None else load_checkpoint(checkpoint.path)
        reports.append((metrics, state))

    monkeypatch.setattr(tune, "report", fake_report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    config = tiny_cfg.replace(epochs=1).to_dict()
    trainable(config)
    (first, state), = reports
    folder = tmp_path / "last"
    save_checkpoint(folder / CHECKPOINT_FILE, state)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(folder))
    reports.clear()
    trainable(config)
    (again, state), = reports
    assert state is None and again["epoch"] == 1
    assert again["val_miou"] == first["val_miou"]
    assert [row["epoch"] for row in again[RESTORED_EPOCHS]] == [1]


def test_checkpoint_files_load_safely(tiny_cfg, tmp_path):
    target = tmp_path / "bad.pt"
    target.write_bytes(b"not a checkpoint")
    from forest_seg.errors import CheckpointError

    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(target)
    torch.save({"model": {}}, target)
    with pytest.raises(CheckpointError, match="not a forest-seg checkpoint"):
        load_checkpoint(target)


def test_cli_writes_metrics_and_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "forest_seg.train", "--data", str(tiny_data), "--image-size",
           "32", "--batch-size", "8", "--epochs", "2", "--encoder-stages", "1", "--pretrained",
           "none", "--device", "cpu", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("config: {")
    assert "epoch 1/2" in done.stdout and "epoch 2/2" in done.stdout
    import pandas as pd

    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    assert load_checkpoint(out / CHECKPOINT_FILE)["epoch"] == 2


@pytest.mark.parametrize(
    ("args", "culprit"),
    [(["--points", "-3"], "points=-3"), (["--data", "/nonexistent/forest"], "/nonexistent/forest"),
     (["--point-strategy", "clicks"], "point_strategy")],
)
def test_cli_bad_input_is_one_clear_line(args, culprit, tmp_path):
    done = subprocess.run([sys.executable, "-m", "forest_seg.train", "--out", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and culprit in lines[0] and "Traceback" not in done.stderr


def test_cli_unwritable_output_folder_is_one_clear_line(tiny_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "run"  # cannot be created, whoever runs the test (root included)
    done = subprocess.run([sys.executable, "-m", "forest_seg.train", "--out", str(out),
                           "--data", str(tiny_data), "--image-size", "32"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert f"output folder {out} is not writable" in lines[0] and "--out" in lines[0]


@pytest.mark.slow
def test_dense_run_on_real_tiles_beats_the_all_forest_baseline(real_sample):
    cfg = TrainConfig(data=str(real_sample), image_size=32, batch_size=16, epochs=4, points=0,
                      lr=1e-3, encoder_stages=2, pretrained="none", device="cpu", seed=0,
                      gamma=0.0)
    tiles = load_tiles(real_sample, 32)
    _, val_idx = split_indices(tiles.scenes, seed=0)
    forest_share = float(np.mean(tiles.masks[val_idx]))
    all_forest_miou = forest_share / 2  # forest IoU = forest share, non-forest IoU = 0
    final, history = run(cfg)
    best = max(m["val_miou"] for m in history)
    assert best > all_forest_miou + 0.1, (best, all_forest_miou)


def test_resume_prefers_the_trials_newest_checkpoint_on_disk(tmp_path, monkeypatch):
    """A killed driver's snapshot may hand an older checkpoint (or none) than the trial saved."""
    import pyarrow.fs
    from ray import tune

    own = tmp_path / "trial"
    for index, epoch in enumerate([1, 2]):
        save_checkpoint(own / f"checkpoint_00000{index}" / CHECKPOINT_FILE,
                        {"epoch": epoch, "history": []})
    (own / "checkpoint_000002").mkdir()
    (own / "checkpoint_000002" / CHECKPOINT_FILE).write_bytes(b"half-written")
    monkeypatch.setattr(train_module, "trial_storage",
                        lambda: (pyarrow.fs.LocalFileSystem(), str(own)))
    assert train_module.resume_state(None)["epoch"] == 2
    stale = tune.Checkpoint.from_directory(own / "checkpoint_000000")
    assert train_module.resume_state(stale)["epoch"] == 2

    donor = tmp_path / "other-trial" / "checkpoint_000000"
    save_checkpoint(donor / CHECKPOINT_FILE, {"epoch": 1, "history": []})
    exploit = tune.Checkpoint.from_directory(donor)
    assert train_module.resume_state(exploit)["epoch"] == 1  # a PBT exploit is taken as is


def test_outside_a_trial_there_is_no_trial_storage():
    assert train_module.trial_storage() is None


@pytest.mark.slow
def test_trial_storage_is_the_trials_own_folder(tmp_path, local_ray):
    """The one Ray workaround (train.trial_storage, a Ray DeveloperAPI): inside a real Tune
    trial it names the folder where Ray keeps that trial's checkpoints. Fails when Ray
    changes the API underneath it."""
    from ray import tune

    def probe(config):
        found = train_module.trial_storage()
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(Path(folder) / CHECKPOINT_FILE, {"epoch": 1, "history": []})
            tune.report({"folder": found[1] if found else "none"},
                        checkpoint=tune.Checkpoint.from_directory(folder))

    with local_ray(num_cpus=1):
        result = tune.Tuner(probe, run_config=tune.RunConfig(
            storage_path=str(tmp_path), name="probe", verbose=0)).fit()[0]
    assert result.error is None
    assert result.metrics["folder"] == result.path
    assert result.checkpoint.path.startswith(result.metrics["folder"] + "/")
    assert train_module.trial_storage() is None  # outside the trial again


def test_reported_lr_follows_the_schedule(tiny_cfg):
    _, history = run(tiny_cfg.replace(lr_schedule="cosine", warmup_epochs=1))
    # warm-up epoch 1: lr/2; then cosine over 2 epochs: lr, lr * 0.5 * (1 + cos(pi / 2))
    assert [m["lr"] for m in history] == pytest.approx([5e-4, 1e-3, 5e-4])


# --- host-device synchronisation ---------------------------------------------------------
# On a GPU every read of a device value (loss.item(), int(count), `if tensor`, .cpu(), boolean
# indexing, bincount) stalls the host until the device catches up. The host_reads fixture
# (conftest.py) counts those calls on a CPU, as torch.cuda.set_sync_debug_mode would on a GPU.


def test_host_reads_counts_what_would_synchronise_a_gpu(host_reads):
    x = torch.tensor([1.0, -2.0])
    with host_reads.watching():
        x.sum().item()
        bool(x[0] > 0)
        int(x[1])
        x.tolist()
        x[x > 0]
        x.cpu()
        torch.bincount(torch.tensor([1]))
        (x * 2).sum()  # stays on the device: not counted
    assert host_reads.calls == ["item", "__bool__", "__int__", "tolist", "mask-index", "cpu",
                                "bincount"]


def count_per_batch(host_reads, monkeypatch):
    """Make every ``SplitData.batches`` start a new ``host_reads`` segment before it fetches a
    batch, and not count while it builds one: a pass's segments are then [before the first
    batch, batch 1, ..., batch n, after the last batch]."""
    original = SplitData.batches

    def batches(self, *args, **kwargs):
        iterator = original(self, *args, **kwargs)
        while True:
            host_reads.mark()
            with host_reads.paused():
                batch = next(iterator, None)
            if batch is None:
                return
            yield batch

    monkeypatch.setattr(SplitData, "batches", batches)


@pytest.mark.parametrize(("batch_size", "steps"), [(8, 3), (4, 5)])
def test_training_steps_never_wait_for_the_device(tiny_cfg, host_reads, monkeypatch,
                                                  batch_size, steps):
    """No host read in any training step; one at the epoch's end, whatever the step count."""
    cfg = tiny_cfg.replace(batch_size=batch_size)
    data = prepare_trial_data(cfg)
    assert len(data.train) == 19  # 8 + 8 + 3 or 4 + 4 + 4 + 4 + 3
    model = build_model(head=cfg.head, pretrained="none", encoder_stages=1)
    optimizer = train_module.make_optimizer(cfg, model)
    # Adam keeps its step counters on the host (unless capturable) and reads them each step:
    # no device read
    host_reads.exempt = lambda t: any(t is s.get("step") for s in optimizer.state.values())
    count_per_batch(host_reads, monkeypatch)
    with host_reads.watching():
        trained = train_module.train_epoch(cfg, model, optimizer, data.train,
                                           torch.device("cpu"), torch.arange(19))
    before, *per_step, after = host_reads.segments
    assert len(per_step) == steps and per_step == [[]] * steps
    assert before == [] and after == ["tolist"]  # the loss sums, read once
    assert math.isfinite(trained["train_loss"]) and trained["diverged"] is False
    assert optimizer.state  # the exemption covered real step counters


@pytest.mark.parametrize(("batch_size", "batches"), [(2, 3), (4, 2), (5, 1)])
def test_validation_reads_the_device_three_times_per_pass(tiny_cfg, host_reads, monkeypatch,
                                                          batch_size, batches):
    """None per batch: finiteness, loss sums and confusion counts are read after the pass."""
    data = prepare_trial_data(tiny_cfg)
    assert len(data.val) == 5
    model = build_model(head=tiny_cfg.head, pretrained="none", encoder_stages=1)
    count_per_batch(host_reads, monkeypatch)
    with host_reads.watching():
        scores = train_module.evaluate(tiny_cfg.replace(batch_size=batch_size), model, data.val,
                                       torch.device("cpu"))
    before, *per_batch, after = host_reads.segments
    assert len(per_batch) == batches and per_batch == [[]] * batches
    assert before == [] and sorted(after) == ["__bool__", "tolist", "tolist"]
    assert scores["diverged"] is False and 0 <= scores["val_miou"] <= 1


def test_a_nan_loss_mid_epoch_ends_the_trial_at_that_epoch(tiny_cfg, monkeypatch):
    """The check is deferred to the epoch's end, yet the epoch of the NaN is the one reported
    diverged (and the trial's last), with no score."""
    original = train_module.partial_focal_ce
    steps = []

    def nan_at_step_5(logits, labels, **kwargs):
        loss = original(logits, labels, **kwargs)
        if logits.requires_grad:  # a training step (validation runs without grad)
            steps.append(len(steps) + 1)
            if len(steps) == 5:  # epoch 2 (3 steps an epoch), second step
                return loss * math.nan
        return loss

    monkeypatch.setattr(train_module, "partial_focal_ce", nan_at_step_5)
    final, history = run(tiny_cfg)
    assert [m["diverged"] for m in history] == [False, True]
    assert len(steps) == 6  # epoch 2 ran to its end: no read before then
    assert math.isfinite(history[0]["train_loss"]) and math.isnan(final["train_loss"])
    for key in train_module.VAL_KEYS:
        assert math.isnan(final[key]), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_steps_and_validation_batches_do_not_synchronise(tiny_cfg, monkeypatch):
    """The real check on a GPU: torch.cuda.set_sync_debug_mode("error") while each step or
    validation batch runs (not while a batch is built, nor after the last one)."""
    cfg = tiny_cfg.replace(device="cuda")
    device = torch.device("cuda")
    data = prepare_trial_data(cfg)
    model = build_model(head=cfg.head, pretrained="none", encoder_stages=1).to(device)
    optimizer = train_module.make_optimizer(cfg, model)
    original = SplitData.batches

    def batches(self, *args, **kwargs):
        iterator = original(self, *args, **kwargs)
        while True:
            torch.cuda.set_sync_debug_mode(0)
            batch = next(iterator, None)
            if batch is None:
                return
            torch.cuda.set_sync_debug_mode("error")
            yield batch

    monkeypatch.setattr(SplitData, "batches", batches)
    try:
        trained = train_module.train_epoch(cfg, model, optimizer, data.train, device,
                                           torch.arange(len(data.train)))
        scores = train_module.evaluate(cfg, model, data.val, device)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert math.isfinite(trained["train_loss"]) and scores["diverged"] is False


def test_epoch_tiles_repeats_whole_shuffles_of_a_small_training_set():
    # 3 tiles, 7 per epoch: two full shuffles of {0, 1, 2} and the first tile of a third
    cfg = TrainConfig(seed=5, epoch_tiles=7)
    order = train_module.epoch_order(cfg, 2, 3).tolist()
    assert len(order) == 7
    assert sorted(order[:3]) == sorted(order[3:6]) == [0, 1, 2]
    assert order[:3] == train_module.epoch_order(cfg.replace(epoch_tiles=None), 2, 3).tolist()
    assert order == train_module.epoch_order(cfg, 2, 3).tolist()  # (seed, epoch) decide it
    # fewer than the set: a cut shuffle, 4 tiles, none twice
    cut = train_module.epoch_order(cfg.replace(epoch_tiles=4), 1, 10).tolist()
    assert len(cut) == 4 and len(set(cut)) == 4
