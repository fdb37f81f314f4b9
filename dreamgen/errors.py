"""The one exception family users see: every message names the field/file/episode and what is accepted."""

from __future__ import annotations


class DreamgenError(Exception):
    """Base class: a problem with the user's input or data, reported as one line, exit code 2."""


class ConfigError(DreamgenError):
    """A configuration value is out of range, unknown, or contradicts another one."""


class StoreError(DreamgenError):
    """A trajectory store is missing, foreign, of another schema version, or given bad data."""


class InstructionError(DreamgenError):
    """A free-text instruction cannot be resolved to exactly one known task."""


class RunDirError(DreamgenError):
    """A run directory already holds a different run or files that are not a dreamgen run."""


class CheckpointError(DreamgenError):
    """A checkpoint (world model, policy, quality model) is missing, damaged, edited, or does not fit its use."""
