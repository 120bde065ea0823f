"""User-facing errors.

Every problem caused by the user's input (files, configs, data) is raised as an
:class:`LfpDistillError` with a one-line message that names the problem and the fix.
The CLI prints these messages without a traceback.
"""

from __future__ import annotations


class LfpDistillError(Exception):
    """A problem with the user's input, described in one line."""


class DataValidationError(LfpDistillError, ValueError):
    """A session's arrays do not satisfy the data model."""


class StoreError(LfpDistillError):
    """A session store (directory of HDF5 files plus manifest) is missing or damaged."""


class ConfigError(LfpDistillError, ValueError):
    """A configuration value is invalid."""


class CheckpointMismatchError(LfpDistillError):
    """A checkpoint does not fit the data it is applied to."""
