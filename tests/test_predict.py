"""The predict CLI: masks at the image's own size, overlays, refusal of foreign files."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from forest_seg.checkpoint import save_checkpoint
from forest_seg.config import TrainConfig
from forest_seg.data import ForestAerialDataset, normalize_images
from forest_seg.model import build_model
from forest_seg.predict import main, model_input, overlay, read_rgb
from forest_seg.synthetic import make_synthetic_dataset
from forest_seg.train import fit


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    data = make_synthetic_dataset(folder / "data", n=12, size=32, seed=1)
    target = folder / "checkpoint.pt"
    fit({"data": str(data), "image_size": 32, "batch_size": 4, "epochs": 1, "pretrained": "none",
         "encoder_stages": 1, "device": "cpu", "threads": 1},
        lambda metrics, checkpoint_state=None: save_checkpoint(target, checkpoint_state))
    return target


def half_forest_checkpoint(pixels: np.ndarray, path) -> torch.nn.Module:
    """Save (to ``path``) and return a linear-head model whose forest logit beats the
    non-forest one on half of ``pixels`` (its classifier bias moved by the median logit
    difference there), so that its masks follow the image rather than being constant."""
    config = TrainConfig(image_size=32, head="linear", encoder_stages=1, pretrained="none")
    torch.manual_seed(0)
    model = build_model(head="linear", pretrained="none", encoder_stages=1).eval()
    with torch.no_grad():
        logits = model(model_input(pixels, 32, torch.device("cpu")))
        model.head.classifier.bias[1] -= (logits[0, 1] - logits[0, 0]).median()
    save_checkpoint(path, {"config": config.to_dict(), "model": model.state_dict()})
    return model


def test_masks_are_the_models_prediction_at_each_images_own_size(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (5, 5, 3)), np.ones((8, 10, 1))).astype(np.uint8)
    images = {"odd": smooth, "other": smooth[::-1, ::-1].copy()}  # 40x50 px, two layouts
    for name, pixels in images.items():
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    model = half_forest_checkpoint(images["odd"], tmp_path / "checkpoint.pt")
    assert main(["--checkpoint", str(tmp_path / "checkpoint.pt"), str(tmp_path / "odd.png"),
                 str(tmp_path / "other.png"), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 0
    masks = {}
    for name, pixels in images.items():
        with torch.no_grad():  # the logits at 32 px, resized back to 40x50, then the argmax
            logits = model(model_input(pixels, 32, torch.device("cpu")))
            expected = F.interpolate(logits, size=(40, 50), mode="bilinear",
                                     align_corners=False).argmax(dim=1)[0].numpy()
        masks[name] = np.asarray(Image.open(tmp_path / "o" / f"{name}_mask.png"))
        np.testing.assert_array_equal(masks[name], expected.astype(np.uint8) * 255)
        assert Image.open(tmp_path / "o" / f"{name}_overlay.png").size == (100, 40)
    assert 0.3 < (masks["odd"] > 0).mean() < 0.7  # about half forest: not a constant mask
    assert not np.array_equal(masks["odd"], masks["other"])  # the masks follow the images


def test_overlay_tints_only_forest_pixels():
    pixels = np.full((1, 2, 3), 100, dtype=np.uint8)
    result = overlay(pixels, np.array([[1, 0]], dtype=np.uint8))
    assert result.shape == (1, 4, 3)
    assert result[0, 2].tolist() == [50, 150, 50]  # 0.5 * 100 + 0.5 * (0, 200, 0)
    assert result[0, 3].tolist() == [100, 100, 100]


@pytest.mark.parametrize("content", [b"garbage", None])
def test_refuses_files_that_are_not_our_checkpoints(tmp_path, content):
    fake = tmp_path / "model.pt"
    if content is None:
        torch.save({"state_dict": {}}, fake)
    else:
        fake.write_bytes(content)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    done = subprocess.run([sys.executable, "-m", "forest_seg.predict", "--checkpoint", str(fake),
                           str(image), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "model.pt" in done.stderr and "not a forest-seg checkpoint" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreadable_image_names_the_file(checkpoint, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    done = subprocess.run([sys.executable, "-m", "forest_seg.predict", "--checkpoint",
                           str(checkpoint), str(bad), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "broken.jpg" in done.stderr
    assert "Traceback" not in done.stderr


def test_input_is_resized_exactly_as_the_training_loader_does(tmp_path):
    # a 256 px JPEG shrunk to 48 px: the training tensor comes from the decoded-tile cache
    root = make_synthetic_dataset(tmp_path / "data", n=1, size=256, seed=4)
    dataset = ForestAerialDataset(root, size=48)
    path = dataset.root / "images" / dataset.tiles.names[0]
    expected = dataset[0]["image"]
    got = model_input(read_rgb(path), 48, torch.device("cpu"))
    assert got.shape == (1, 3, 48, 48) and got.dtype == torch.float32
    assert (got[0] - expected).abs().max().item() == 0.0
    # the resize choice matters here: plain (not antialiased) bilinear sees other pixels
    pixels = torch.from_numpy(read_rgb(path).copy())[None]
    naive = F.interpolate(normalize_images(pixels), size=(48, 48), mode="bilinear",
                          align_corners=False)
    assert (naive[0] - expected).abs().mean().item() > 0.01


def experiment_with(tmp_path, checkpoint, rows):
    """A sweep folder whose results.csv holds ``rows``; every ``best_checkpoint`` folder named
    in them gets a copy of ``checkpoint``."""
    import shutil

    import pandas as pd

    exp = tmp_path / "exp"
    for row in rows:
        if isinstance(row.get("best_checkpoint"), str):
            (exp / row["best_checkpoint"]).mkdir(parents=True)
            shutil.copy(checkpoint, exp / row["best_checkpoint"] / "checkpoint.pt")
    exp.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(exp / "results.csv", index=False)
    return exp


def test_experiment_predicts_with_the_best_completed_trials_best_checkpoint(checkpoint,
                                                                            tmp_path, capsys):
    from forest_seg.predict import best_checkpoint

    rows = [{"trial_id": "a", "status": "COMPLETED", "val_miou": 0.61, "best_epoch": 3,
             "best_checkpoint": "p10_s0_a/checkpoint_000002"},
            {"trial_id": "b", "status": "COMPLETED", "val_miou": 0.65, "best_epoch": 2,
             "best_checkpoint": "p50_s0_b/checkpoint_000001"},
            {"trial_id": "c", "status": "EARLY_STOPPED", "val_miou": 0.90, "best_epoch": 1,
             "best_checkpoint": "p0_s0_c/checkpoint_000000"}]
    exp = experiment_with(tmp_path, checkpoint, rows)
    file, which = best_checkpoint(exp)
    assert file == exp / "p50_s0_b" / "checkpoint_000001" / "checkpoint.pt"
    assert which.startswith("best trial b (final val_miou 0.6500, best epoch 2)")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    assert main(["--experiment", str(exp), str(image), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 0
    assert "best trial b" in capsys.readouterr().out
    assert (tmp_path / "o" / "x_mask.png").is_file()


@pytest.mark.parametrize("rows, culprit", [
    ([{"trial_id": "a", "status": "COMPLETED", "val_miou": 0.6}], "no best_checkpoint column"),
    ([{"trial_id": "a", "status": "ERROR", "val_miou": None, "best_checkpoint": None}],
     "no COMPLETED trial with a checkpoint"),
])
def test_experiment_without_a_usable_checkpoint_says_why(checkpoint, tmp_path, rows, culprit):
    from forest_seg.errors import DatasetError
    from forest_seg.predict import best_checkpoint

    with pytest.raises(DatasetError, match=culprit):
        best_checkpoint(experiment_with(tmp_path, checkpoint, rows))
