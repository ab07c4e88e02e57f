"""Segmentation network: a (possibly truncated) torchvision ResNet50 encoder plus a head.

``build_model()`` returns a module mapping float images [B, in_channels, H, W] to logits
[B, num_classes, H, W] for any H, W (not only multiples of 32). Heads:

- ``linear``: the original report's design, a 1x1 conv on the last encoder feature map,
  upsampled bilinearly to the input size;
- ``unet``: a light decoder (256/128/64/32 channels) with skip connections from the ResNet
  stages and the stem, then a 1x1 conv and a bilinear upsample to the input size.

Pretrained weights come from torchvision's ImageNet weights (torch hub cache first, download
otherwise; a failure warns loudly and continues from random init) or from a local file. The
model's ``pretrained_source`` says what was actually loaded: ``"imagenet"``, ``"file:<path>"``
or ``"none"``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import ResNet50_Weights, resnet50

from forest_seg.config import HEADS
from forest_seg.errors import CheckpointError, ConfigError

STAGE_CHANNELS = (64, 256, 512, 1024, 2048)  # stem, layer1..layer4
DECODER_CHANNELS = (256, 128, 64, 32)
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")
log = logging.getLogger(__name__)


class ResNetEncoder(nn.Module):
    """ResNet50 stem + ``layer1..layer<stages>`` with torchvision's parameter names.

    ``forward(x [B,C,H,W])`` returns the stem output [B,64,H/2,W/2] followed by each kept
    stage's output [B,256|512|1024|2048, H/4|8|16|32, ...] (sizes rounded up).
    """

    def __init__(self, in_channels: int, stages: int) -> None:
        super().__init__()
        with torch.device("meta"):  # skip initialising the dropped stages (layer4 is 15M params)
            full = resnet50()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False, device="meta")
        self.bn1, self.relu, self.maxpool = full.bn1, full.relu, full.maxpool
        self.stage_names = [f"layer{i}" for i in range(1, stages + 1)]
        for name in self.stage_names:
            self.add_module(name, getattr(full, name))
        self.to_empty(device="cpu")
        for m in self.modules():  # torchvision's ResNet init, in the same module order
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        feats = [x]
        x = self.maxpool(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
            feats.append(x)
        return feats


class LinearHead(nn.Module):
    """1x1 conv on the last feature map [B,C,h,w] -> logits [B,num_classes,h,w]."""

    def __init__(self, stages: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(STAGE_CHANNELS[stages], num_classes, 1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        return self.classifier(feats[-1])


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class UNetHead(nn.Module):
    """Decoder: from the deepest map, repeatedly upsample to the next skip's size, concat, and
    apply two conv-bn-relu blocks; ends at the stem's resolution, logits [B,num_classes,H/2,W/2].
    """

    def __init__(self, stages: int, num_classes: int) -> None:
        super().__init__()
        widths = DECODER_CHANNELS[-stages:]  # one block per skip; the finest always has 32
        blocks, cin = [], STAGE_CHANNELS[stages]
        for skip_ch, cout in zip(reversed(STAGE_CHANNELS[:stages]), widths, strict=True):
            block = nn.Sequential(_conv_bn_relu(cin + skip_ch, cout), _conv_bn_relu(cout, cout))
            blocks.append(block)
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Conv2d(cin, num_classes, 1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.classifier(x)


class SegmentationModel(nn.Module):
    """Encoder + head; ``forward(x [B,in_channels,H,W]) -> logits [B,num_classes,H,W]``.

    The head's coarse logits (e.g. [B,C,H/32,W/32]) are upsampled in float32 even under
    autocast: bilinear upsampling in bf16 would round the interpolated logits (and their
    gradients) to 8 bits of mantissa, which costs dense supervision its precision.
    """

    def __init__(self, encoder: ResNetEncoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        self.pretrained_source = "none"

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(self.encoder(x))
        with torch.autocast(x.device.type, enabled=False):
            return F.interpolate(logits.float(), size=x.shape[-2:], mode="bilinear",
                                 align_corners=False)


def adapt_conv1(weight: Tensor, in_channels: int) -> Tensor:
    """RGB conv1 filters [64,3,7,7] -> [64,in_channels,7,7].

    Rule: input channel i < 3 copies RGB filter i; extra channels (e.g. NIR) get the mean of
    the RGB filters; then every channel is multiplied by 3 / in_channels so that, for inputs of
    similar statistics on all channels, conv1's activations keep the RGB model's scale.
    """
    extra = weight.mean(dim=1, keepdim=True).expand(-1, max(in_channels - 3, 0), -1, -1)
    return torch.cat([weight[:, :in_channels], extra], dim=1) * (3.0 / in_channels)


def _load_checked(module: nn.Module, state: dict, source: str, what: str) -> None:
    """Load ``state`` into ``module`` strictly, raising CheckpointError that lists misfits."""
    expected = module.state_dict()
    missing = sorted(k for k in expected.keys() - state.keys() if "num_batches_tracked" not in k)
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(
        f"{k} {tuple(getattr(state[k], 'shape', ()))} != {tuple(expected[k].shape)}"
        for k in expected.keys() & state.keys()
        if not isinstance(state[k], Tensor) or state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"weights {source} do not fit {what}: {len(missing)} missing keys {missing[:4]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:4]}, shape mismatches {wrong[:4]}"
        )
    module.load_state_dict(state, strict=False)  # strict=False only for num_batches_tracked


def _load_resnet_state(
    model: SegmentationModel, state: dict, source: str, in_channels: int
) -> None:
    """Load a torchvision ResNet50 state dict into the encoder (fc.* and dropped stages ignored)."""
    encoder = model.encoder
    dropped = ("fc.",) + tuple(f"layer{i}." for i in range(len(encoder.stage_names) + 1, 5))
    state = {k: v for k, v in state.items() if not k.startswith(dropped)}
    conv1 = state.get("conv1.weight")
    if isinstance(conv1, Tensor) and conv1.ndim == 4 and conv1.shape[1] == 3 != in_channels:
        state["conv1.weight"] = adapt_conv1(conv1, in_channels)
    _load_checked(encoder, state, source, f"a ResNet50 encoder with {in_channels} input channels")


def _load_imagenet(model: SegmentationModel, in_channels: int) -> str:
    weights = ResNet50_Weights.IMAGENET1K_V2
    try:
        state = weights.get_state_dict(progress=False, map_location="cpu", weights_only=True)
    except Exception as exc:  # no internet, no cache, corrupt cache: all mean "no weights"
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        msg = (
            f"ImageNet weights for ResNet50 could not be had ({type(exc).__name__}: {exc}); "
            "the run CONTINUES FROM RANDOM INITIALISATION (pretrained_source='none'). To use them, "
            f"put {weights.url} at {cached} (warm the torch hub cache; TORCH_HOME moves it) "
            "or pass pretrained=<path to a ResNet50 state-dict file>."
        )
        log.warning(msg)
        warnings.warn(msg, stacklevel=3)
        return "none"
    _load_resnet_state(model, state, "imagenet", in_channels)
    return "imagenet"


def _load_file(model: SegmentationModel, path: Path, in_channels: int) -> str:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read weights file {path}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"weights file {path} holds a {type(obj).__name__}, expected a dict")
    if isinstance(obj.get("model"), dict):
        _load_checked(model, obj["model"], f"file {path} ['model']", "this model")
    else:
        _load_resnet_state(model, obj, f"file {path}", in_channels)
    return f"file:{path}"


def build_model(
    head: str = "linear",
    pretrained: str | os.PathLike | None = "none",
    in_channels: int = 3,
    num_classes: int = 2,
    encoder_stages: int = 4,
) -> SegmentationModel:
    """Build the segmentation net: [B,in_channels,H,W] float -> [B,num_classes,H,W] logits.

    ``pretrained``: ``"imagenet"`` (torchvision IMAGENET1K_V2 from the torch hub cache or a
    download; on failure a warning and random init), ``"none"``/``None`` (random init, seeded by
    ``torch.manual_seed``), or a path to a file holding a torchvision ResNet50 state dict or a
    ``{"model": state_dict}`` checkpoint of this model. ``encoder_stages`` (1..4) keeps
    ``layer1..layer<encoder_stages>`` (4 = full ResNet50). Non-RGB conv1: see :func:`adapt_conv1`.
    """
    if head not in HEADS:
        raise ConfigError(f"head={head!r} is not one of {HEADS}")
    for name, value, low, high in (
        ("in_channels", in_channels, 1, None),
        ("num_classes", num_classes, 1, None),
        ("encoder_stages", encoder_stages, 1, 4),
    ):
        if not isinstance(value, int) or value < low or (high is not None and value > high):
            upper = f" and <= {high}" if high is not None else ""
            raise ConfigError(f"{name}={value!r}: expected an integer >= {low}{upper}")
    key = str(pretrained).lower() if pretrained is not None else "none"
    path = Path(pretrained) if key not in ("none", "imagenet") else None
    if path is not None and not path.is_file():
        text = str(pretrained)
        pathlike = path.exists() or "/" in text or os.sep in text or path.suffix in WEIGHT_SUFFIXES
        if text and pathlike:
            raise CheckpointError(f"pretrained weights file {path} does not exist or is not a file")
        raise ConfigError(
            f"pretrained={pretrained!r}: expected 'imagenet', 'none' or a path to a weights file"
        )
    cls = LinearHead if head == "linear" else UNetHead
    encoder = ResNetEncoder(in_channels, encoder_stages)
    model = SegmentationModel(encoder, cls(encoder_stages, num_classes))
    if key == "imagenet":
        model.pretrained_source = _load_imagenet(model, in_channels)
    elif path is not None:
        model.pretrained_source = _load_file(model, path, in_channels)
    return model
