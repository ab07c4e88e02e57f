"""Predict forest masks for images with a trained checkpoint.

    python -m forest_seg.predict --checkpoint out/train/checkpoint.pt tile1.jpg tile2.jpg \\
        --out predictions/
    python -m forest_seg.predict --experiment runs/grid-20261127-120000 tile1.jpg

``--experiment`` takes a sweep's folder and predicts with its best trial's best checkpoint
(:func:`best_checkpoint`).

For each image it writes ``<stem>_mask.png`` (white = forest, at the image's own size) and
``<stem>_overlay.png`` (the image beside the image with forest tinted green).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from .cache import writable_dir
from .checkpoint import CHECKPOINT_FILE, load_checkpoint
from .cli import run_cli
from .config import TrainConfig
from .data import normalize_images, resize_pixels
from .errors import DatasetError
from .model import build_model
from .train import resolve_device

FOREST_TINT = np.array([0, 200, 0], dtype=np.float32)


def load_model(checkpoint: str | Path, device: torch.device) -> tuple[torch.nn.Module, TrainConfig]:
    """The trained model (eval mode, on ``device``) and its config from a checkpoint."""
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(state["config"])
    model = build_model(head=cfg.head, pretrained="none", encoder_stages=cfg.encoder_stages)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def best_checkpoint(experiment: str | Path) -> tuple[Path, str]:
    """The checkpoint file of a sweep's best trial and a line saying which it is.

    The best trial is the COMPLETED one of highest final ``val_miou`` in the experiment's
    results.csv; its ``best_checkpoint`` (relative to the experiment folder) is the checkpoint
    of its best epoch, kept by score. DatasetError when the experiment has no such trial or
    column (a sweep from before checkpoints were kept by score: pass --checkpoint).
    """
    from .results import BEST_CHECKPOINT, RESULTS_FILE

    folder = Path(experiment)
    path = folder / RESULTS_FILE
    if not path.is_file():
        raise DatasetError(f"--experiment {folder}: no {RESULTS_FILE} there (a sweep's folder, "
                           "e.g. runs/grid-<time>, was expected)")
    results = pd.read_csv(path)
    if BEST_CHECKPOINT not in results.columns:
        raise DatasetError(f"{path} has no {BEST_CHECKPOINT} column (a sweep from before "
                           "checkpoints were kept by score): pass --checkpoint FILE")
    done = results[(results["status"] == "COMPLETED") & results[BEST_CHECKPOINT].notna()]
    if done.empty:
        raise DatasetError(f"{path}: no COMPLETED trial with a checkpoint to predict with")
    best = done.loc[pd.to_numeric(done["val_miou"], errors="coerce").idxmax()]
    file = folder / str(best[BEST_CHECKPOINT]) / CHECKPOINT_FILE
    if not file.is_file():
        raise DatasetError(f"{path}: the best trial's checkpoint {file} is missing")
    return file, (f"best trial {best['trial_id']} (final val_miou {best['val_miou']:.4f}, "
                  f"best epoch {best['best_epoch']:g}): {file}")


def read_rgb(path: Path) -> np.ndarray:
    """uint8 [H,W,3] pixels of an image file; DatasetError naming the file when unreadable."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"image {path} not found") from None
    except OSError as exc:
        raise DatasetError(f"cannot decode image {path}: {exc}") from None


def model_input(pixels: np.ndarray, image_size: int, device: torch.device) -> torch.Tensor:
    """float32 [1,3,S,S] (S = ``image_size``) net input for uint8 [H,W,3] pixels: resized by the
    training loader's own resize (:func:`forest_seg.data.resize_pixels`, antialiased bilinear
    when shrinking) and ImageNet-normalised, so it equals the training tensor of that image."""
    resized = resize_pixels(pixels, image_size)
    return normalize_images(torch.from_numpy(resized.copy())[None].to(device))


@torch.no_grad()
def predict_mask(model: torch.nn.Module, pixels: np.ndarray, image_size: int,
                 device: torch.device) -> np.ndarray:
    """uint8 [H,W] {0,1} forest mask for uint8 [H,W,3] pixels.

    The image is resized to the training size as the training tiles were (:func:`model_input`),
    and the logits are resized back (bilinear) to the image's own size before the argmax.
    """
    height, width = pixels.shape[:2]
    logits = F.interpolate(model(model_input(pixels, image_size, device)).float(),
                           size=(height, width), mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()


def overlay(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 [H,2W,3]: the image, then the image with forest pixels tinted green."""
    tinted = pixels.astype(np.float32)
    forest = mask.astype(bool)
    tinted[forest] = 0.5 * tinted[forest] + 0.5 * FOREST_TINT
    return np.concatenate([pixels, tinted.astype(np.uint8)], axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forest_seg.predict",
                                     description="Predict forest masks with a checkpoint.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a checkpoint.pt file")
    source.add_argument("--experiment", type=Path,
                        help="a sweep's folder: predict with its best trial's best checkpoint")
    parser.add_argument("images", nargs="+", type=Path, help="RGB image files")
    parser.add_argument("--out", type=Path, default=Path("predictions"))
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    print("config: " + json.dumps({k: str(v) for k, v in vars(args).items()}), flush=True)
    device = resolve_device(args.device)
    checkpoint = args.checkpoint
    if args.experiment is not None:
        checkpoint, which = best_checkpoint(args.experiment)
        print(which, flush=True)
    model, cfg = load_model(checkpoint, device)
    writable_dir(args.out, "output folder", "pass --out a writable folder")
    for path in args.images:
        pixels = read_rgb(path)
        mask = predict_mask(model, pixels, cfg.image_size, device)
        Image.fromarray(mask * 255).save(args.out / f"{path.stem}_mask.png")
        Image.fromarray(overlay(pixels, mask)).save(args.out / f"{path.stem}_overlay.png")
        print(f"{path}: forest {mask.mean():.1%} -> {args.out / (path.stem + '_mask.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
