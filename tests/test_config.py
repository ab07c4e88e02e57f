"""TrainConfig: the report's defaults, dict round trips, validation messages, CLI flags."""

import argparse

import pytest

from forest_seg.config import TrainConfig, add_config_arguments, config_from_args
from forest_seg.errors import ConfigError


def test_defaults_are_the_reports_baseline():
    cfg = TrainConfig()
    assert (cfg.image_size, cfg.batch_size, cfg.epochs) == (256, 16, 10)
    assert (cfg.optimizer, cfg.lr, cfg.points, cfg.gamma) == ("adam", 1e-4, 50, 2.0)
    assert (cfg.split, cfg.val_fraction, cfg.data) == ("random", 0.2, None)


def test_dict_round_trip_and_string_coercion():
    cfg = TrainConfig.from_dict({"points": "10", "lr": "1e-3", "alpha": "none", "amp": "false",
                                 "max_tiles": "200", "val_fraction": 0.25})
    assert cfg.points == 10 and isinstance(cfg.points, int)
    assert cfg.lr == pytest.approx(1e-3) and cfg.alpha is None and cfg.amp is False
    assert cfg.max_tiles == 200
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"pointz": 5})
    message = str(err.value)
    assert "pointz" in message and "points" in message and "point_strategy" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("points", -1), ("lr", 0), ("lr", -1e-3), ("point_strategy", "random"), ("head", "fpn"),
     ("split", "tiles"), ("val_fraction", 0.0), ("val_fraction", 1.0), ("epochs", 0),
     ("batch_size", 1), ("alpha", 1.5), ("points", 2.5), ("lr", "fast"), ("encoder_stages", 5),
     ("optimizer", "sgd"), ("device", "tpu"), ("image_size", None), ("lr_schedule", "step"),
     ("warmup_epochs", 10), ("val_data", ""), ("seed", 1.5)],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({field: value})
    assert str(err.value).startswith(f"invalid {field}=")
    assert "expected" in str(err.value)


def test_replace_validates():
    cfg = TrainConfig().replace(points=0)
    assert cfg.points == 0
    with pytest.raises(ConfigError, match="lr"):
        cfg.replace(lr=0)


def test_every_field_is_a_dashed_flag():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--point-strategy", "forest", "--max-tiles", "64", "--no-amp",
                              "--lr", "1e-5"])
    values = config_from_args(args, defaults={"epochs": 3})
    assert values == {"point_strategy": "forest", "max_tiles": "64", "amp": False, "lr": "1e-5",
                      "epochs": 3}
    cfg = TrainConfig.from_dict(values)
    assert (cfg.max_tiles, cfg.amp, cfg.epochs) == (64, False, 3)
    flags = {a.option_strings[0] for a in parser._actions if a.option_strings}
    for name in TrainConfig.field_names():
        assert "--" + name.replace("_", "-") in flags


def test_choice_lists_come_from_the_modules_that_implement_them():
    from forest_seg import model, points, schedules

    assert TrainConfig.choices("point_strategy") == points.POINT_STRATEGIES
    assert TrainConfig.choices("head") == model.HEADS
    assert TrainConfig.choices("lr_schedule") == schedules.LR_SCHEDULES
    assert TrainConfig.choices("split") == ("random", "scene")
    assert TrainConfig.choices("lr") is None


def test_field_metadata_names_the_swept_and_execution_only_fields():
    assert TrainConfig.swept_fields() == ("points", "point_strategy", "lr", "seed")
    assert TrainConfig.execution_fields() == ("device", "num_workers", "threads",
                                              "checkpoint_every", "checkpoint_minutes")


def test_importing_the_config_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, forest_seg.config; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("seed", [-1, 2**32, "-3", 1e10])
def test_seed_must_lie_in_the_32_bit_range(seed):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"seed": seed})
    assert str(err.value) == f"invalid seed={int(float(seed))}: expected an integer in [0, 2**32)"


def test_seed_range_ends_are_valid():
    assert TrainConfig(seed=0).seed == 0
    assert TrainConfig.from_dict({"seed": str(2**32 - 1)}).seed == 4294967295


def test_val_data_defaults_to_none_and_is_a_flag():
    assert TrainConfig().val_data is None
    assert TrainConfig.from_dict({"val_data": "none"}).val_data is None
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    values = config_from_args(parser.parse_args(["--val-data", "/data/held-out"]))
    assert TrainConfig.from_dict(values).val_data == "/data/held-out"
