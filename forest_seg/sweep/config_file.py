"""``--config FILE``: a driver's flags read from a YAML, TOML or JSON file, and the
experiment's ``sweep.json`` that records them.

A file maps flag names (``max-concurrent`` or ``max_concurrent``, as on the command line
without the dashes) to values as the flags take them: a list for a flag of several values
(``lrs: [1e-3, 1e-4]``), true/false for a switch, null for "not given". The file's values
become command-line tokens placed before the real command line, so argparse applies its usual
types and choices to both, and a flag given on the command line overrides the file.

``sweep.json`` holds every flag value of a new sweep after parsing, except those that name
this one run (:data:`NOT_SAVED`: ``--name``, ``--resume``, ``--config``): passing it back with
``--config`` starts a new experiment with the same settings (give ``--name`` to name it).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

SWEEP_FILE = "sweep.json"
NOT_SAVED = ("name", "resume", "config")  # flags of one run, not of the sweep it reproduces
FORMATS = (".yaml", ".yml", ".toml", ".json")


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--config FILE`` flag (read by :func:`parse_flags`)."""
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="flags from a YAML, TOML or JSON file (e.g. an experiment's "
                             f"{SWEEP_FILE}); flags given here override it")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML (``.yaml``/``.yml``), TOML or JSON file holds; ConfigError naming the
    file when it is missing, unreadable, of another format or not a mapping."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"--config {path}: expected a {', '.join(FORMATS)} file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from None
    try:
        values = _parse(text, suffix)
    except Exception as exc:  # yaml, tomllib and json each raise their own error types
        raise ConfigError(f"--config {path}: not valid {suffix[1:].upper()}: "
                          f"{str(exc).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of flag names to values, "
                          f"got {type(values).__name__}")
    return values


def _parse(text: str, suffix: str) -> Any:
    if suffix == ".json":
        return json.loads(text)
    if suffix == ".toml":
        import tomllib  # Python >= 3.11

        return tomllib.loads(text)
    import yaml

    return yaml.safe_load(text)


def file_tokens(parser: argparse.ArgumentParser, values: Mapping[str, Any],
                source: str) -> list[str]:
    """The command-line tokens ``values`` stand for (``{"lrs": [0.001]}`` -> ``--lrs 0.001``).

    Keys are flag names with ``-`` or ``_``; ``null`` (and ``false`` for a plain switch) give
    nothing. An unknown key is a ConfigError naming ``source``, the key and the closest flag.
    """
    flags = _long_flags(parser)
    tokens: list[str] = []
    for key, value in values.items():
        flag = "--" + str(key).replace("_", "-")
        action = flags.get(flag)
        if action is None or action.dest == "config":
            close = difflib.get_close_matches(flag, [f for f in flags if f != "--config"], n=1)
            hint = f"; did you mean {close[0][2:]}?" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
        tokens += _tokens(flag, action, value, source)
    return tokens


def _long_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every ``--long-flag`` of ``parser`` with its action (argparse has no public listing)."""
    return {option: action for action in parser._actions
            for option in action.option_strings if option.startswith("--")}


def _tokens(flag: str, action: argparse.Action, value: Any, source: str) -> list[str]:
    if value is None:
        return []
    if action.nargs == 0:  # a switch: store_true, or --x / --no-x
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: invalid {flag[2:]}={value!r}: expected true or false")
        if isinstance(action, argparse.BooleanOptionalAction):
            return [flag if value else "--no-" + flag[2:]]
        return [flag] if value == (action.const is True) else []
    if isinstance(value, (list, tuple)):
        return [flag, *map(str, value)]
    return [flag, str(value)]


def parse_flags(parser: argparse.ArgumentParser,
                argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with the values of ``--config FILE`` (when given) under the
    command line's flags. A bad value in the file is a ConfigError naming the file."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argparse.ArgumentParser(add_help=False)
    add_config_flag(first)
    path = first.parse_known_args(argv)[0].config
    if path is None:
        return parser.parse_args(argv)
    tokens = file_tokens(parser, read_config_file(path), f"--config {path}")
    _check_alone(parser, tokens, path)
    return parser.parse_args(tokens + argv)


def _check_alone(parser: argparse.ArgumentParser, tokens: list[str], path: str) -> None:
    """Parse the file's tokens on their own, so that argparse's complaint names the file."""
    complaint = io.StringIO()
    try:
        with contextlib.redirect_stderr(complaint):
            parser.parse_args(tokens)
    except SystemExit:
        message = complaint.getvalue().strip().splitlines()[-1]
        raise ConfigError(f"--config {path}: {message.split(' error: ', 1)[-1]}") from None


def sweep_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The flag values :data:`SWEEP_FILE` records: all of ``args`` but :data:`NOT_SAVED`."""
    return {k: v for k, v in vars(args).items() if k not in NOT_SAVED}


def save_sweep_file(experiment_path: str, settings: Mapping[str, Any]) -> None:
    """Write ``settings`` as ``<experiment_path>/sweep.json`` (a local folder or a URI)."""
    from .files import write_text

    write_text(experiment_path, SWEEP_FILE, json.dumps(dict(settings), indent=2) + "\n")
