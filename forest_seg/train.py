"""Training one configuration: ``fit`` (no Ray), ``trainable`` (the Ray Tune adapter), and the
single-run CLI.

Run one training on the embedded synthetic dataset (tiny CPU settings)::

    python -m forest_seg.train --image-size 64 --epochs 2 --encoder-stages 2 \\
        --pretrained none --out out/one-run

Every ``TrainConfig`` field is a flag (``--points``, ``--point-strategy``, ``--max-tiles``...).
The run writes ``metrics.csv`` (one row per epoch), ``config.json`` and ``checkpoint.pt`` to
``--out``; ``--resume`` continues from that checkpoint.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch

from .baselines import baseline_scores
from .batches import SplitData, TrialData, prepare_trial_data
from .cache import writable_dir
from .checkpoint import CHECKPOINT_FILE, load_checkpoint, read_checkpoint, save_checkpoint
from .checkpoint_policy import CheckpointPolicy
from .cli import run_cli
from .config import TrainConfig, add_config_arguments, config_from_args
from .errors import CheckpointError, ConfigError
from .losses import partial_focal_ce
from .metrics import SegmentationMetrics
from .model import build_model
from .points import IGNORE_INDEX
from .results import RESTORED_EPOCHS, TRAIN_TILES, TRIAL_WARNINGS, VAL_COLUMNS
from .schedules import lr_for_epoch
from .startup import StartupClock

Metrics = dict[str, Any]
VAL_KEYS = VAL_COLUMNS  # the validation scores of an epoch (forest_seg.results)


class Report(Protocol):
    """``fit``'s one callback: called once per epoch with the epoch's metrics and, on
    checkpoint epochs, the state to save (see :func:`training_state`)."""

    def __call__(self, metrics: Metrics, checkpoint_state: dict[str, Any] | None = None) -> None:
        ...


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("invalid device='cuda': no CUDA GPU is visible to this process")
    return torch.device(name)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def epoch_order(cfg: TrainConfig, epoch: int, n: int) -> torch.Tensor:
    """The positions (into the ``n`` training tiles) epoch ``epoch`` visits, a function of
    (seed, epoch) only, so a resumed run visits batches in the same order as an uninterrupted
    one: one shuffle of the ``n`` tiles, or with ``cfg.epoch_tiles`` as many shuffles as it
    takes, one after another, cut at ``epoch_tiles`` positions (the first shuffle is the
    same either way)."""
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    if cfg.epoch_tiles is None:
        return torch.randperm(n, generator=generator)
    passes = -(-cfg.epoch_tiles // n)
    return torch.cat([torch.randperm(n, generator=generator)
                      for _ in range(passes)])[:cfg.epoch_tiles]


def _autocast(cfg: TrainConfig, device: torch.device):
    enabled = cfg.amp and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class LabelledLoss:
    """A loss summed over labelled pixels, kept on the device: adding a batch never waits for
    the device; :meth:`read` does, once.

    ``add(loss, labels)`` adds a batch's mean loss per labelled pixel (float scalar tensor)
    times its labelled pixel count (``labels`` [B,H,W], 255 = unlabelled), in float64.
    """

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.int64, device=device)

    def add(self, loss: torch.Tensor, labels: torch.Tensor) -> None:
        count = (labels != IGNORE_INDEX).sum()
        self.total += loss.detach().double() * count
        self.count += count

    def read(self) -> tuple[float, int]:
        """(sum of the loss over labelled pixels, labelled pixels): one device read."""
        total, count = torch.stack((self.total, self.count.double())).tolist()
        return total, int(count)

    def mean(self) -> float:
        """The loss per labelled pixel (NaN without one): one device read."""
        total, count = self.read()
        return total / count if count else math.nan


def train_step(cfg: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               batch, device: torch.device) -> torch.Tensor:
    """One optimisation step on ``batch`` (``image`` [B,3,H,W], ``labels`` [B,H,W]); returns
    the loss, a 0-dim tensor on the device. Nothing is read back to the host: a non-finite
    loss still steps (its NaN reaches the weights), and the caller reports the divergence at
    the epoch's end (:class:`LabelledLoss`)."""
    with _autocast(cfg, device):
        logits = model(batch.image)
    loss = partial_focal_ce(logits, batch.labels, gamma=cfg.gamma, alpha=cfg.alpha)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train_epoch(cfg, model, optimizer, train: SplitData, device, order) -> dict[str, float]:
    """One pass over the training tiles, with no host-device synchronisation inside it.

    ``train_loss`` is the mean loss per labelled pixel over the epoch (each batch's mean
    weighted by its labelled pixels), averaged the same way as ``val_loss``. The sums stay on
    the device and are read once, at the epoch's end, so a non-finite loss does not stop the
    epoch: the weights may take NaN steps after it, and the epoch is reported ``diverged``
    (with ``train_loss`` NaN), which ends the trial with NaN validation scores.
    """
    model.train()
    channels_last = cfg.channels_last and device.type == "cuda"
    loss = LabelledLoss(device)
    images, data_time = 0, 0.0
    wait_start = time.perf_counter()
    for batch in train.batches(cfg.batch_size, device, order, cfg.num_workers, channels_last,
                               drop_single=True):
        data_time += time.perf_counter() - wait_start
        loss.add(train_step(cfg, model, optimizer, batch, device), batch.labels)
        images += len(batch.image)
        wait_start = time.perf_counter()
    total, labelled = loss.read()
    diverged = not math.isfinite(total)  # losses are >= 0: no inf - inf; NaN and inf stay
    train_loss = total / labelled if labelled and not diverged else math.nan
    return {"train_loss": train_loss, "images": images, "data_time_s": data_time,
            "diverged": diverged}


@torch.no_grad()
def evaluate(cfg, model, val: SplitData, device) -> dict[str, float]:
    """Partial loss on the validation points and dense metrics on the validation masks.

    ``val_loss`` is NaN when no validation pixel is labelled. Non-finite logits mean the
    weights diverged: then ``diverged`` is True and every ``val_*`` score is NaN (argmax
    over NaN logits is not a prediction). The loss, the finiteness and the confusion counts
    stay on the device until the pass ends: a constant number of device reads per pass,
    none per batch.
    """
    model.eval()
    metrics = SegmentationMetrics()
    loss = LabelledLoss(device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    channels_last = cfg.channels_last and device.type == "cuda"
    for batch in val.batches(cfg.batch_size, device, None, cfg.num_workers, channels_last):
        with _autocast(cfg, device):
            logits = model(batch.image)
        finite &= torch.isfinite(logits).all()
        # no labelled pixel: the loss is 0 (never NaN) and adds nothing
        loss.add(partial_focal_ce(logits, batch.labels, gamma=cfg.gamma, alpha=cfg.alpha),
                 batch.labels)
        metrics.update(logits.argmax(dim=1), batch.mask)
    if not finite:
        return {**diverged_scores(), "diverged": True}
    scores = metrics.compute()
    return {"val_loss": loss.mean(), **{f"val_{name}": value for name, value in scores.items()},
            "diverged": False}


def diverged_scores() -> dict[str, float]:
    """The validation scores of a diverged model: NaN for each (it has no score)."""
    return {key: math.nan for key in VAL_KEYS}


def trial_baselines(data: TrialData) -> Metrics:
    """The trial's no-training reference scores (forest_seg.baselines) on its own split, from
    the same labels the network trains on."""
    train, val = data.train, data.val
    return baseline_scores(*train.labelled_pixels(), val.images[val.tiles], val.masks[val.tiles])


def training_state(cfg, model, optimizer, epoch: int, history: list[Metrics]) -> dict[str, Any]:
    """Everything needed to resume after ``epoch`` (see forest_seg.checkpoint)."""
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "config": cfg.to_dict(),
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng,
        "history": [dict(row) for row in history],
        "pretrained_source": model.pretrained_source,
    }


def _restore(state: dict[str, Any], model, optimizer) -> tuple[int, list[Metrics]]:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["cpu"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["epoch"]), [dict(row) for row in state["history"]]


def fit(
    config: TrainConfig | dict[str, Any],
    report: Report | None = None,
    *,
    resume_state: dict[str, Any] | None = None,
) -> Metrics:
    """Train one configuration and return the last epoch's metrics.

    ``report(metrics, checkpoint_state=None)`` is called once per epoch; on the epochs that
    :class:`~forest_seg.checkpoint_policy.CheckpointPolicy` picks (the last one, a new best,
    a diverged one, every ``checkpoint_every``-th, and one at least ``checkpoint_minutes`` after the
    previous checkpoint) ``checkpoint_state`` holds everything needed to resume after that
    epoch (:func:`training_state`; save it with :func:`forest_seg.checkpoint.save_checkpoint`).
    The first report also carries the ``startup_*`` metrics (:mod:`forest_seg.startup`).
    Each epoch's lr comes from ``cfg.lr_schedule`` (forest_seg.schedules) and is reported as
    ``lr``. ``resume_state`` (a loaded checkpoint) continues a stopped run: the history then
    equals that of a run never stopped (CPU). A non-finite loss ends the run with
    ``diverged=True``; no exception escapes.
    """
    clock = StartupClock()
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or available_cpus())
    data = prepare_trial_data(cfg, clock)
    with clock.part("baselines"):
        constants = {**trial_baselines(data), TRAIN_TILES: len(data.train)}
    with clock.part("model"):
        torch.manual_seed(cfg.seed)
        model = build_model(head=cfg.head, pretrained=cfg.pretrained,
                            encoder_stages=cfg.encoder_stages).to(device)
        if cfg.channels_last and device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(cfg, model)
    done, history = _restore(resume_state, model, optimizer) if resume_state else (0, [])
    policy = CheckpointPolicy(cfg.epochs, cfg.checkpoint_every, cfg.checkpoint_minutes)
    startup = clock.metrics()
    if done and (done >= cfg.epochs or history[-1]["diverged"]):
        # The checkpoint of a finished run, whose last result may never have been recorded (a
        # driver killed in between): report that epoch again rather than nothing.
        if report is not None:
            report({**history[-1], **startup})
        return history[-1]
    last_checkpoint = time.monotonic()
    for epoch in range(done + 1, cfg.epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr_for_epoch(cfg, epoch, history)
        metrics = {**run_epoch(cfg, model, optimizer, data, device, epoch, constants),
                   **startup}
        startup = {}
        history.append(metrics)
        if report is not None:
            due = policy.due(epoch, time.monotonic() - last_checkpoint, metrics["diverged"],
                             new_best=is_new_best(history))
            report(metrics, checkpoint_state=training_state(cfg, model, optimizer, epoch,
                                                            history) if due else None)
            if due:
                last_checkpoint = time.monotonic()
        if metrics["diverged"]:
            break
    return history[-1]


def is_new_best(history: list[Metrics]) -> bool:
    """Whether the last epoch's ``val_miou`` is finite and above every earlier epoch's."""
    scores = [m.get("val_miou", math.nan) for m in history]
    last = scores[-1]
    return math.isfinite(last) and all(not (s >= last) for s in scores[:-1])


def run_epoch(cfg, model, optimizer, data: TrialData, device, epoch: int,
              constants: Metrics | None = None) -> Metrics:
    """Train and validate one epoch; returns the epoch's metrics dict (with ``constants``,
    the trial's per-trial values such as its reference scores and training tile count,
    copied in). ``epoch_time_s`` is the epoch's training and validation; ``finished_at`` the
    Unix time it ended (where a sweep's time went: ``python -m bench --only efficiency``)."""
    constants = constants or {}
    start = time.perf_counter()
    trained = train_epoch(cfg, model, optimizer, data.train, device,
                          epoch_order(cfg, epoch, len(data.train)))
    train_time = time.perf_counter() - start
    if trained["diverged"]:
        scores = {**diverged_scores(), "diverged": True}
    else:
        scores = evaluate(cfg, model, data.val, device)
    diverged = scores.pop("diverged")
    return {
        "epoch": epoch,
        "train_loss": trained["train_loss"],
        **scores,
        **constants,
        "lr": optimizer.param_groups[0]["lr"],
        "epoch_time_s": time.perf_counter() - start,
        "finished_at": time.time(),
        "images_per_s": trained["images"] / train_time if train_time > 0 else 0.0,
        "data_time_s": trained["data_time_s"],
        "diverged": diverged,
        "pretrained_loaded": model.pretrained_source != "none",
    }


def trainable(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: ``fit`` reporting each epoch with ``tune.report`` (and a
    ``tune.Checkpoint`` on checkpoint epochs), resumed from :func:`resume_state`, with as many
    torch threads as CPUs the trial was given. Each report carries ``checkpoint_s``: the
    seconds the training thread spent writing that epoch's checkpoint file (0 without one;
    Ray's copy of it into the experiment's storage, inside ``tune.report``, is not counted)."""
    import ray
    from ray import tune

    cfg = TrainConfig.from_dict(config)
    if cfg.threads is None:
        assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        cfg = cfg.replace(threads=max(1, int(assigned)))

    state = resume_state(tune.get_checkpoint())
    # The epochs the checkpoint had finished ride along with the first report after a resume,
    # so a driver interrupted before it recorded them still writes every epoch.
    restored = {RESTORED_EPOCHS: list(state["history"])} if state else {}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")

        def report(metrics: Metrics, checkpoint_state: dict[str, Any] | None = None) -> None:
            metrics = {**metrics, **restored, **_new_warnings(caught), "checkpoint_s": 0.0}
            restored.clear()
            if checkpoint_state is None:
                tune.report(metrics)
                return
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                save_checkpoint(Path(folder) / CHECKPOINT_FILE, checkpoint_state)
                metrics["checkpoint_s"] = time.perf_counter() - start
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

        fit(cfg, report, resume_state=state)


PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _new_warnings(caught: list) -> dict[str, list[str]]:
    """``{TRIAL_WARNINGS: [...]}`` with this package's warnings recorded since the last call
    (each consumed once), or {} when there are none."""
    texts = [str(w.message) for w in caught
             if str(Path(w.filename or "").resolve()).startswith(PACKAGE_DIR)]
    caught.clear()
    return {TRIAL_WARNINGS: texts} if texts else {}


def resume_state(handed) -> dict[str, Any] | None:
    """The state a Tune trial resumes from, or None to start afresh: the checkpoint Ray hands
    over (``tune.get_checkpoint()``), unless the trial's own storage folder holds a newer one.

    Ray hands over the checkpoint recorded in its experiment snapshot, which is taken about
    once a second: after a killed driver it can lag behind the trial's newest checkpoint (or
    be missing), and a trial that had finished would train again. So the trial's own folder
    (:func:`trial_storage`) is read too and the newer state wins. A checkpoint from another
    trial's folder (a PBT exploit) is taken as handed.
    """
    state = None
    if handed is not None:
        with handed.as_directory() as folder:
            state = load_checkpoint(Path(folder) / CHECKPOINT_FILE)
    own_folder = trial_storage()
    if own_folder is None or (handed is not None and not handed.path.startswith(own_folder[1])):
        return state
    for candidate in _checkpoints_in(*own_folder):
        if state is None or candidate["epoch"] > state["epoch"]:
            state = candidate
    return state


def trial_storage():
    """(pyarrow filesystem, folder) of the running Tune trial's storage, or None outside one.

    The one Ray workaround of this package: Ray's public API names no trial storage folder
    (``tune.get_context().get_trial_dir()`` is a local working copy), so this reads
    ``tune.get_context().get_storage()``, a Ray DeveloperAPI that may change between minor
    versions. ``tests/test_train.py::test_trial_storage_is_the_trials_own_folder`` fails if
    it stops naming the folder that holds the trial's checkpoints; until then, without it
    :func:`resume_state` would fall back to Ray's (possibly older) checkpoint.
    """
    from ray import tune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray warns when asked outside a trial
        try:
            storage = tune.get_context().get_storage()
            return storage.storage_filesystem, storage.trial_fs_path
        except Exception:  # not inside a Tune trial (None), or Ray changed the developer API
            return None


def _checkpoints_in(filesystem, folder: str) -> list[dict[str, Any]]:
    """The readable checkpoints in ``folder``'s ``checkpoint_*`` subfolders (a half-written
    one, from a process killed mid-save, is skipped)."""
    import pyarrow.fs

    states = []
    entries = filesystem.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
    for entry in entries:
        if entry.type != pyarrow.fs.FileType.Directory or not entry.base_name.startswith(
            "checkpoint_"
        ):
            continue
        path = f"{entry.path}/{CHECKPOINT_FILE}"
        try:
            with filesystem.open_input_file(path) as stream:
                states.append(read_checkpoint(io.BytesIO(stream.read()), path))
        except (OSError, CheckpointError):
            continue
    return states


def format_progress(metrics: Metrics, epochs: int) -> str:
    """One progress line for an epoch."""
    flag = "  DIVERGED" if metrics["diverged"] else ""
    return (
        f"epoch {metrics['epoch']}/{epochs}  train_loss {metrics['train_loss']:.4f}  "
        f"val_loss {metrics['val_loss']:.4f}  val_miou {metrics['val_miou']:.4f}  "
        f"val_iou {metrics['val_iou']:.4f}  {metrics['images_per_s']:.1f} img/s  "
        f"{metrics['epoch_time_s']:.1f}s{flag}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m forest_seg.train", description="Train one configuration."
    )
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("out/train"),
                        help="folder for metrics.csv, config.json and checkpoint.pt")
    parser.add_argument("--resume", action="store_true",
                        help="continue from --out/checkpoint.pt (same config)")
    args = parser.parse_args(argv)
    checkpoint_path = args.out / CHECKPOINT_FILE
    saved = load_checkpoint(checkpoint_path) if args.resume else None
    base = saved["config"] if saved else {}
    cfg = TrainConfig.from_dict(config_from_args(args, defaults=base))
    print("config: " + json.dumps(cfg.to_dict()), flush=True)
    writable_dir(args.out, "output folder", "pass --out a writable folder")
    (args.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    history = list(saved["history"]) if saved else []

    def report(metrics: Metrics, checkpoint_state: dict[str, Any] | None = None) -> None:
        import pandas as pd

        if checkpoint_state is not None:
            save_checkpoint(checkpoint_path, checkpoint_state)
        history.append(metrics)
        pd.DataFrame(history).to_csv(args.out / "metrics.csv", index=False)
        print(format_progress(metrics, cfg.epochs), flush=True)

    final = fit(cfg, report, resume_state=saved)
    print(f"final val_miou {final['val_miou']:.4f} (val_iou {final['val_iou']:.4f}); "
          f"wrote {args.out / 'metrics.csv'} and {checkpoint_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
