"""Fixed-config presets of the sweep drivers: defaults under the flags a user gives."""

from __future__ import annotations

from typing import Any

from ..config import TrainConfig
from ..errors import ConfigError

# Every preset validates on whole scenes held out of training (split="scene"): a random split
# puts tiles of the same scene on both sides. --split random is the report's protocol.
PRESETS: dict[str, dict[str, Any]] = {
    # The report's scale, for GPUs: full ResNet50, ImageNet weights, 256 px, 10 epochs.
    "paper": {"image_size": 256, "batch_size": 16, "epochs": 10, "encoder_stages": 4,
              "pretrained": "imagenet", "split": "scene"},
    # Finishes the default grid within minutes on a 2-core CPU: a ResNet50 truncated after
    # its second stage, 48 px tiles, 240 tiles, 6 epochs of batch 8, no ImageNet download.
    "cpu": {"image_size": 48, "batch_size": 8, "epochs": 6, "encoder_stages": 2,
            "max_tiles": 240, "pretrained": "none", "device": "cpu", "split": "scene"},
    # --smoke-test: a minute on a CPU; used by the tests.
    "smoke": {"image_size": 32, "batch_size": 8, "epochs": 2, "encoder_stages": 1,
              "max_tiles": 24, "pretrained": "none", "device": "cpu", "split": "scene"},
}


def preset_config(name: str, **changes: Any) -> TrainConfig:
    """The TrainConfig of preset ``name`` (``paper``, ``cpu``, ``smoke``) with ``changes``."""
    if name not in PRESETS:
        raise ConfigError(f"invalid preset {name!r}: expected one of {', '.join(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[name], **changes})


def auto_preset(nodes: list[dict[str, float]]) -> str:
    """``paper`` when some node of the cluster has a GPU, else ``cpu``."""
    return "paper" if any(n["GPU"] > 0 for n in nodes) else "cpu"
