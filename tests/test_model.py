"""Tests for forest_seg.model: shapes, weight loading, ImageNet fallback, gradients, determinism.

No test downloads anything: the torch hub dir points into tmp_path and downloads raise.
"""

import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import ResNet50_Weights

from forest_seg.errors import CheckpointError, ConfigError
from forest_seg.model import HEADS, build_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convs run far faster on one thread; two threads on a shared 2-core box thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tv_weights(tmp_path_factory) -> tuple[Path, dict]:
    """A seeded, randomly initialised torchvision ResNet50 state dict saved to a file."""
    torch.manual_seed(123)
    net = torchvision.models.resnet50()
    with torch.no_grad():  # non-trivial BN statistics, so loading them is visible
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    state = net.state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub dir in tmp_path (never the user's cache) where downloads fail."""
    hub = tmp_path / "hub"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))  # what torch.hub.set_dir sets

    def no_download(url, *args, **kwargs):
        raise urllib.error.URLError(f"test: no network for {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return hub


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("stages", [1, 2, 3])
def test_output_shape_any_size(head, stages):
    model = build_model(head, encoder_stages=stages).eval()
    with torch.no_grad():
        for size in (32, 40, 50, 64):
            out = model(torch.randn(2, 3, size, size))
            assert out.shape == (2, 2, size, size)
        assert model(torch.randn(1, 3, 40, 64)).shape == (1, 2, 40, 64)


@pytest.mark.parametrize("head", HEADS)
def test_full_encoder_is_default_resnet50(head):
    model = build_model(head).eval()
    n_params = sum(p.numel() for p in model.encoder.parameters())
    assert n_params == 23_508_032  # torchvision resnet50 without its fc layer
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    assert model.pretrained_source == "none"


def test_in_channels_4_shape_and_num_classes():
    model = build_model("unet", in_channels=4, num_classes=3, encoder_stages=1).eval()
    assert model.encoder.conv1.weight.shape == (64, 4, 7, 7)
    with torch.no_grad():
        assert model(torch.randn(2, 4, 40, 40)).shape == (2, 3, 40, 40)


@pytest.mark.parametrize("in_channels", [1, 4, 5])
def test_in_channels_keep_rgb_filters(tv_weights, in_channels):
    path, state = tv_weights
    model = build_model("linear", pretrained=path, in_channels=in_channels, encoder_stages=1)
    got, rgb = model.encoder.conv1.weight.detach(), state["conv1.weight"]
    scale = 3.0 / in_channels  # documented rule: every channel scaled by 3 / in_channels
    k = min(3, in_channels)
    torch.testing.assert_close(got[:, :k], rgb[:, :k] * scale)
    for extra in range(3, in_channels):  # NIR-like channels: mean of the RGB filters
        torch.testing.assert_close(got[:, extra], rgb.mean(dim=1) * scale)
    # a constant input gives the RGB model's conv1 response (the point of the scaling)
    if in_channels > 3:
        x = torch.ones(1, in_channels, 16, 16)
        ref = F.conv2d(torch.ones(1, 3, 16, 16), rgb, stride=2, padding=3)
        torch.testing.assert_close(model.encoder.conv1(x), ref, atol=1e-5, rtol=1e-4)
    # the rest of the encoder is loaded unchanged
    torch.testing.assert_close(model.encoder.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_pretrained_torchvision_file(tv_weights):
    path, state = tv_weights
    model = build_model("unet", pretrained=str(path), encoder_stages=2).eval()
    assert model.pretrained_source == f"file:{path}"
    enc = model.encoder
    torch.testing.assert_close(enc.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    for key in ("layer1.0.conv1.weight", "layer2.3.bn3.running_var", "bn1.running_mean"):
        torch.testing.assert_close(enc.state_dict()[key], state[key], rtol=0, atol=0)
    # the encoder computes exactly torchvision's ResNet50 up to layer2
    net = torchvision.models.resnet50()
    net.load_state_dict(state)
    net.eval()
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        ref = net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))
        torch.testing.assert_close(enc(x)[-1], ref)


def test_pretrained_own_checkpoint(tmp_path):
    torch.manual_seed(1)
    source = build_model("unet", encoder_stages=2)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": source.state_dict(), "config": {"lr": 1e-4}, "epoch": 3}, path)
    torch.manual_seed(2)
    model = build_model("unet", pretrained=path, encoder_stages=2)
    assert model.pretrained_source == f"file:{path}"
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # a checkpoint of another architecture does not fit: the error names the path and keys
    with pytest.raises(CheckpointError, match="ckpt.pt") as err:
        build_model("linear", pretrained=path, encoder_stages=2)
    assert "head.blocks" in str(err.value) and "unexpected" in str(err.value)


def test_bad_weight_files(tmp_path, tv_weights):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a torch file\xff" * 10)
    with pytest.raises(CheckpointError, match="garbage.pth"):
        build_model(pretrained=garbage, encoder_stages=1)

    wrong = tmp_path / "wrong_keys.pt"
    torch.save({"foo.weight": torch.zeros(3), "conv1.weight": torch.zeros(64, 3, 7, 7)}, wrong)
    with pytest.raises(CheckpointError, match="wrong_keys.pt") as err:
        build_model(pretrained=wrong, encoder_stages=1)
    assert "foo.weight" in str(err.value) and "bn1.weight" in str(err.value)

    shape = tmp_path / "wrong_shape.pt"
    torch.save({**tv_weights[1], "bn1.weight": torch.zeros(32)}, shape)
    with pytest.raises(CheckpointError, match="wrong_shape.pt.*bn1.weight"):
        build_model(pretrained=shape, encoder_stages=1)

    not_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_dict)
    with pytest.raises(CheckpointError, match="list.pt"):
        build_model(pretrained=not_dict, encoder_stages=1)

    missing = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(CheckpointError, match="nowhere"):
        build_model(pretrained=str(missing), encoder_stages=1)
    with pytest.raises(CheckpointError, match="resnet.pth"):
        build_model(pretrained="resnet.pth", encoder_stages=1)
    for bad in ("imagenett", ""):
        with pytest.raises(ConfigError, match="imagenet.*none") as err:
            build_model(pretrained=bad, encoder_stages=1)
        assert repr(bad) in str(err.value)


def test_imagenet_unavailable_warns_and_falls_back(offline_hub, caplog):
    with pytest.warns(UserWarning, match="ImageNet weights .* could not be had") as record:
        model = build_model("linear", pretrained="imagenet", encoder_stages=1)
    message = str(record[0].message)
    assert "RANDOM" in message and str(offline_hub / "checkpoints") in message
    assert "pretrained=<path" in message
    assert any("ImageNet" in r.getMessage() for r in caplog.records)  # logged too
    assert model.pretrained_source == "none"
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_imagenet_get_state_dict_error_falls_back(monkeypatch, offline_hub):
    def broken(self, *args, **kwargs):
        raise RuntimeError("corrupt cache")

    monkeypatch.setattr(ResNet50_Weights, "get_state_dict", broken)
    with pytest.warns(UserWarning, match="corrupt cache"):
        model = build_model("unet", pretrained="ImageNet", encoder_stages=1)
    assert model.pretrained_source == "none"


def test_imagenet_from_warm_hub_cache(offline_hub, tv_weights):
    path, state = tv_weights
    cached = offline_hub / "checkpoints" / Path(ResNet50_Weights.IMAGENET1K_V2.url).name
    cached.parent.mkdir(parents=True)
    cached.symlink_to(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_model("unet", pretrained="imagenet", encoder_stages=2)
    assert model.pretrained_source == "imagenet"
    torch.testing.assert_close(model.encoder.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(
        model.encoder.layer2[0].conv2.weight, state["layer2.0.conv2.weight"], rtol=0, atol=0
    )


@pytest.mark.parametrize("head", HEADS)
def test_gradients_reach_encoder_and_head(head):
    torch.manual_seed(0)
    model = build_model(head, encoder_stages=2).train()
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 2, (2, 32, 32))
    watched = {"conv1": model.encoder.conv1.weight, "classifier": model.head.classifier.weight}
    before = {k: v.detach().clone() for k, v in watched.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())
    optimizer.step()
    for key, param in watched.items():
        assert not torch.equal(param, before[key]), f"{key} did not change"


def test_seeded_init_is_deterministic():
    x = torch.randn(1, 3, 40, 40)
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(build_model("unet", encoder_stages=2).eval()(x))
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])


@pytest.mark.parametrize("head", HEADS)
def test_logits_upsampled_in_float32_under_bf16_autocast(head):
    torch.manual_seed(0)
    model = build_model(head, encoder_stages=1).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        coarse = model.head(model.encoder(x))
        out = model(x)
    assert coarse.dtype == torch.bfloat16  # autocast is on: the head computes in bf16
    assert out.dtype == torch.float32 and out.shape == (2, 2, 32, 32)
    expected = F.interpolate(coarse.float(), size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_channels_last_matches_contiguous():
    model = build_model("unet", encoder_stages=2).eval()
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        ({"head": "fcn"}, "head='fcn'"),
        ({"encoder_stages": 0}, "encoder_stages=0"),
        ({"encoder_stages": 5}, "encoder_stages=5"),
        ({"in_channels": 0}, "in_channels=0"),
        ({"num_classes": 0}, "num_classes=0"),
    ],
)
def test_invalid_arguments(kwargs, culprit):
    with pytest.raises(ConfigError, match=culprit):
        build_model(**kwargs)
