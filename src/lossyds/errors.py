"""Error types. Every error lossyds raises on purpose is a LossydsError.

UsageError (bad flags, unknown names, impossible rates) maps to CLI exit code 2;
every other LossydsError to exit code 1.
"""
from __future__ import annotations


class LossydsError(Exception):
    """Base class of every error lossyds raises on purpose."""

    exit_code = 1


class UsageError(LossydsError, ValueError):
    """Bad usage or input: an unknown name, an impossible rate, a bad path."""

    exit_code = 2


class SourceError(LossydsError):
    """A source file could not be read or converted (its sample is skipped, or the build stops with --strict)."""


class CodecError(LossydsError):
    """A codec failed to encode or decode a sample."""


class ShardError(LossydsError):
    """A shard is missing, truncated or corrupt. Names the shard and, where known, the sample key."""

    def __init__(self, message: str, shard: str | None = None, key: str | None = None):
        super().__init__(message)
        self.shard = shard
        self.key = key


class BuildStateError(LossydsError):
    """An output folder is in a state the build cannot continue from (finished without --force, or built with other settings)."""

    exit_code = 2
