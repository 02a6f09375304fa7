"""User-facing errors: each carries a message that names the file, field or id at fault.

The CLI prints these without a traceback and exits with status 2; anything else is a bug.
"""

from __future__ import annotations


class RecsysError(Exception):
    """Base class for errors caused by user input (config, data, checkpoints)."""


class ConfigError(RecsysError):
    """An experiment config file is malformed: unknown key, wrong type, value out of range."""


class DatasetError(RecsysError):
    """A dataset directory breaks the dataset contract (see docs/dataset-format.md)."""


class EncoderError(RecsysError):
    """A pretrained encoder cannot be loaded from the configured path."""
