"""Error types. Every error lossyds raises on purpose is a LossydsError.

UsageError (bad flags, unknown names, impossible rates) maps to CLI exit code 2;
every other LossydsError to exit code 1. Messages name Python parameters; the CLI
prints `cli_message()`, which names flags where they differ.
"""

from __future__ import annotations

import re

_OBJECT_REPR = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def reason_text(exc: BaseException) -> str:
    """An error's message for a record (a manifest's skip reason): object reprs such as
    `<_io.BytesIO object at 0x7f...>`, whose addresses change from run to run, become the
    type's name, so two builds of the same sources write the same manifest."""
    return _OBJECT_REPR.sub(lambda match: match.group(1).rsplit(".", 1)[-1], str(exc))


class LossydsError(Exception):
    """Base class of every error lossyds raises on purpose."""

    exit_code = 1

    def cli_message(self) -> str:
        """The message as the command line shows it."""
        return str(self)


class UsageError(LossydsError, ValueError):
    """Bad usage or input: an unknown name, an impossible rate, a bad path."""

    exit_code = 2


class OptionError(UsageError):
    """A bad value for declared options (see lossyds.options). `template` holds `{0}`, `{1}`,
    ... where the options' names go: Python names in str(), flags in cli_message()."""

    def __init__(self, template: str, *options: str):
        self.template = template
        self.options = options
        super().__init__(template.format(*options))

    def cli_message(self) -> str:
        return self.template.format(*(flag_name(option) for option in self.options))


def flag_name(name: str) -> str:
    """An option's Python name as its command-line flag: 'shard_mb' -> '--shard-mb'. Kept here, beside
    OptionError, so that errors import nothing from the modules that raise them."""
    return "--" + name.replace("_", "-")


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


class BuildLockedError(LossydsError):
    """Another process holds the output folder's lock (a build or merge into the same folder)."""


class BuildStateError(LossydsError):
    """An output folder is in a state the build cannot continue from (finished without --force, or built with other settings)."""

    exit_code = 2


class TaskModelError(LossydsError):
    """A task model of `lossyds eval` raised, or returned what its task cannot score; names the model and the sample."""
