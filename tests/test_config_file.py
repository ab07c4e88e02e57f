"""``--config FILE`` of the sweep drivers: YAML, TOML and JSON files, the command line over the
file, unknown keys, and an experiment's sweep.json that reproduces its sweep."""

import json

import pandas as pd
import pytest
from test_sweeps import run_driver

from forest_seg.errors import ConfigError
from forest_seg.sweep.config_file import (
    NOT_SAVED,
    SWEEP_FILE,
    parse_flags,
    save_sweep_file,
    sweep_settings,
)
from forest_seg.sweep.flags import build_parser

FILES = {
    "sweep.yaml": "max-concurrent: 3\nepochs: 4\nheads: [unet, linear]\nsmoke_test: true\n"
                  "amp: false\nlr_schedule: cosine\n",
    "sweep.toml": "max-concurrent = 3\nepochs = 4\nheads = ['unet', 'linear']\nsmoke_test = true\n"
                  "amp = false\nlr_schedule = 'cosine'\n",
    "sweep.json": json.dumps({"max_concurrent": 3, "epochs": 4, "head": ["unet", "linear"],
                              "smoke-test": True, "amp": False, "lr-schedule": "cosine"}),
}


def parser():
    return build_parser("test", "the drivers' shared flags")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_format_gives_the_flags_typed_as_on_the_command_line(tmp_path, name):
    args = parse_flags(parser(), ["--config", write(tmp_path, name, FILES[name])])
    assert args.max_concurrent == 3  # int, as --max-concurrent 3 gives it
    assert args.epochs == "4"  # TrainConfig flags stay strings until TrainConfig checks them
    assert args.head == ["unet", "linear"]
    assert args.smoke_test is True and args.amp is False
    assert args.lr_schedule == "cosine"
    assert args.scheduler == "asha" and args.resume is False  # untouched flags keep defaults


def test_the_command_line_overrides_the_file(tmp_path):
    path = write(tmp_path, "sweep.yaml", "max_concurrent: 3\nheads: [unet, linear]\namp: false\n")
    args = parse_flags(parser(), ["--max-concurrent", "1", "--config", path, "--heads", "linear",
                                  "--amp"])
    assert args.max_concurrent == 1 and args.head == ["linear"] and args.amp is True


def test_unknown_key_names_the_file_the_key_and_the_closest_flag(tmp_path):
    path = write(tmp_path, "sweep.yaml", "max_concurent: 3\n")
    with pytest.raises(ConfigError, match=r"sweep\.yaml: unknown key 'max_concurent'; "
                                          r"did you mean max-concurrent\?"):
        parse_flags(parser(), ["--config", path])


@pytest.mark.parametrize(
    ("name", "text", "culprit"),
    [("sweep.yaml", "scheduler: hyperband\n", "invalid choice: 'hyperband'"),
     ("sweep.yaml", "max_concurrent: two\n", "invalid int value: 'two'"),
     ("sweep.yaml", "smoke_test: 1\n", "invalid smoke-test=1: expected true or false"),
     ("sweep.yaml", "- epochs\n", "expected a mapping of flag names to values, got list"),
     ("sweep.toml", "epochs = \n", "not valid TOML"),
     ("sweep.ini", "[x]\n", "expected a .yaml, .yml, .toml, .json file")],
)
def test_bad_files_are_one_clear_error_naming_the_file(tmp_path, name, text, culprit):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as raised:
        parse_flags(parser(), ["--config", path])
    assert str(raised.value).startswith(f"--config {path}: ") and culprit in str(raised.value)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="absent.yaml: cannot read it"):
        parse_flags(parser(), ["--config", str(tmp_path / "absent.yaml")])


def test_saved_sweep_file_parses_back_to_the_same_flags(tmp_path):
    given = ["--max-concurrent", "2", "--heads", "unet", "linear", "--no-amp", "--epochs", "3",
             "--scheduler", "fifo", "--name", "first", "--resume", "--alpha", "none"]
    args = parse_flags(parser(), given)
    save_sweep_file(str(tmp_path), sweep_settings(args))
    saved = json.loads((tmp_path / SWEEP_FILE).read_text())
    assert not set(NOT_SAVED) & set(saved)  # a rerun is a new experiment, not a resume
    again = parse_flags(parser(), ["--config", str(tmp_path / SWEEP_FILE)])
    expected = {**vars(args), "name": None, "resume": False,
                "config": str(tmp_path / SWEEP_FILE)}
    assert vars(again) == expected


@pytest.mark.slow
def test_a_sweep_from_a_yaml_file_is_rerun_from_its_sweep_json(tmp_path):
    config = write(tmp_path, "small.yaml", "smoke_test: true\npoints: [10]\nlrs: [0.001]\n"
                                           "no_dense: true\nepochs: 1\nmax-tiles: 16\n"
                                           f"storage_path: {tmp_path}\n")
    first = run_driver("grid.py", "--config", config, "--name", "first", "--seeds", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    saved = json.loads((tmp_path / "first" / SWEEP_FILE).read_text())
    assert saved["points"] == [10] and saved["seeds"] == 2 and saved["max_tiles"] == "16"
    again = run_driver("grid.py", "--config", tmp_path / "first" / SWEEP_FILE, "--name", "again")
    assert again.returncode == 0, again.stderr[-3000:]
    columns = ["points", "lr", "seed", "max_epochs", "max_tiles", "image_size"]
    trials = [pd.read_csv(tmp_path / name / "results.csv")[columns].sort_values(columns)
              .reset_index(drop=True) for name in ("first", "again")]
    pd.testing.assert_frame_equal(trials[0], trials[1])
    # points 10 at lr 1e-3 and the lr series' point (50 points), each over 2 seeds
    assert trials[0][["points", "seed"]].values.tolist() == [[10, 0], [10, 1], [50, 0], [50, 1]]
    assert set(trials[0]["max_epochs"]) == {1} and set(trials[0]["max_tiles"]) == {16}
