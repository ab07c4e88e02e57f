"""Exceptions for bad user input.

Every CLI catches :class:`ForestSegError` and prints its message as one line on stderr
(exit status 2) instead of a traceback, so each message must name the culprit (the path,
file or field) and say what was expected.
"""


class ForestSegError(ValueError):
    """Base class for errors caused by user input (config values, files, datasets)."""


class ConfigError(ForestSegError):
    """An invalid or unknown configuration field."""


class DatasetError(ForestSegError):
    """A dataset root, CSV or tile that cannot be used."""


class CheckpointError(ForestSegError):
    """A file that is not a readable forest-seg checkpoint."""
