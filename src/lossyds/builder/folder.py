"""Which output folders a build may write into, and which files in them are its own.

A build writes into a new or empty folder, or into one that holds a lossyds build: one
that holds the marker file MARKER_NAME with MARKER's content, which lossyds writes before
anything else. File names alone decide nothing: a user's README.md, manifest.json or
shard-000000.tar is not lossyds's. Any other folder is refused before a byte is written.

Inside a marked folder, resume, clean-up and --force remove only files that the build's own
records name (`recorded_names`): a finished build's manifest (its shards, and the manifest,
card and build info it wrote), an interrupted build's journal (its finished shards, the
shard it may have been writing, and the files `Journal.writing` names), and the bookkeeping
files (marker, journal, lock, an object-storage claim). A file the records do not name is never removed; where the
build would write a file of that name, it refuses instead.

The same rules hold for a local folder (`LocalFolder`) and a folder behind an fsspec URL
(lossyds.builder.remote.RemoteFolder); both offer the `Folder` operations below.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Protocol

from ..errors import BuildStateError, UsageError
from ..manifest import (
    BUILD_INFO_NAME,
    CARD_NAME,
    JOURNAL_NAME,
    MANIFEST_NAME,
    PARTIAL_SUFFIX,
    SHARD_FORMATS,
    SHARD_PREFIX,
    shard_name,
    write_text_atomic,
)
from .claim import CLAIM_NAME
from .journal import Journal
from .lock import LOCK_NAME, is_lock_record

MARKER_NAME = ".lossyds-folder"
MARKER = b'{"lossyds": "build folder", "version": 1}\n'
FINISH_NAMES = (CARD_NAME, BUILD_INFO_NAME, MANIFEST_NAME)  # what finish_folder writes, in that order
BOOKKEEPING = (MARKER_NAME, LOCK_NAME, CLAIM_NAME, JOURNAL_NAME)


class Folder(Protocol):
    """A build's output folder. Names are file names directly inside it."""

    label: str  # the folder's path or URL, for messages

    def entries(self) -> list[str]:
        """Names of the files and folders directly inside; [] when the folder does not exist."""

    def read(self, name: str) -> bytes | None:
        """The file's bytes, or None when there is no such file."""

    def write(self, name: str, data: bytes) -> None:
        """Replace the file's content as a whole (a reader sees the old or the new bytes)."""

    def remove(self, name: str) -> None:
        """Remove the file if it exists."""

    def create_exclusive(self, name: str, data: bytes) -> bool:
        """Create the file with `data` unless it exists; False when it existed."""


class LocalFolder:
    """A local folder as a `Folder`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.label = str(path)

    def entries(self) -> list[str]:
        try:
            return sorted(os.listdir(self.path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read(self, name: str) -> bytes | None:
        try:
            return (self.path / name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def write(self, name: str, data: bytes) -> None:
        write_text_atomic(self.path / name, data.decode())

    def remove(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def create_exclusive(self, name: str, data: bytes) -> bool:
        try:
            fd = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return True


def _with_partials(names: list[str]) -> set[str]:
    return {name for name in names} | {name + PARTIAL_SUFFIX for name in names}


def _json(data: bytes | None) -> Any:
    try:
        return json.loads(data) if data is not None else None
    except ValueError:
        return None


def _claim_in_progress(folder: Folder, name: str) -> bool:
    """Files another lossyds process may be creating right now while claiming the folder: its lock
    (empty, or holding a lock record) and its marker (empty, being written, or complete)."""
    data = folder.read(name)
    if name == MARKER_NAME:
        return data is not None and MARKER.startswith(data)
    return name == LOCK_NAME and data is not None and (data == b"" or is_lock_record(data))


def holds_marker(folder: Folder) -> bool:
    return folder.read(MARKER_NAME) == MARKER


def _refuse_foreign(folder: Folder, foreign: list[str]) -> None:
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    raise UsageError(
        f"--out {folder.label} holds files lossyds did not write ({shown}); build into a new or empty folder, "
        "or into one that holds a lossyds build."
    )


def claim(folder: Folder, create: bool = True) -> bool:
    """Mark `folder` (it exists) as a lossyds build folder, or refuse it (UsageError) when it holds
    anything but a lossyds build or another lossyds process's claim under way. With `create`
    false, only the check: it runs before anything is written, so a refused folder stays as it was.
    True when this call wrote the marker."""
    if holds_marker(folder):
        return False
    foreign = [name for name in folder.entries() if not _claim_in_progress(folder, name)]
    if foreign:
        _refuse_foreign(folder, foreign)
    if not create:
        return False
    if folder.create_exclusive(MARKER_NAME, MARKER):
        return True
    if not _claim_in_progress(folder, MARKER_NAME):
        _refuse_foreign(folder, [MARKER_NAME])
    return False


def unclaim_if_unused(folder: Folder) -> None:
    """Remove the marker of a folder that holds nothing else (a build that failed at its start)."""
    if folder.entries() == [MARKER_NAME]:
        folder.remove(MARKER_NAME)


def recorded_names(folder: Folder) -> set[str]:
    """The names the folder's build records say lossyds wrote there or may have been writing
    (with their temporary `.partial` names), bookkeeping files included."""
    names = _with_partials(list(BOOKKEEPING)) | _journal_names(folder)
    manifest = _json(folder.read(MANIFEST_NAME))
    if isinstance(manifest, dict) and isinstance(manifest.get("shards"), list):
        shards = [s["path"] for s in manifest["shards"] if isinstance(s, dict) and isinstance(s.get("path"), str)]
        names |= _with_partials([*FINISH_NAMES, *shards])
    return names


def _journal_names(folder: Folder) -> set[str]:
    """What the journal names: its finished shards, the shard after them, and what it is writing."""
    journal = _json(folder.read(JOURNAL_NAME))
    if not isinstance(journal, dict):
        return set()
    shards = [s["path"] for s in journal.get("shards") or [] if isinstance(s, dict) and isinstance(s.get("path"), str)]
    writing = [name for name in journal.get("writing") or [] if isinstance(name, str)]
    shard_format = (journal.get("settings") or {}).get("shard_format")
    if isinstance(shard_format, str):
        writing.append(shard_name(len(shards), shard_format))
    return _with_partials([*shards, *writing])


_WRITTEN_SHARD = re.compile(rf"{SHARD_PREFIX}-\d{{6,}}\.({'|'.join(map(re.escape, SHARD_FORMATS))})")


def _would_write(name: str) -> bool:
    """Whether a build may write a file of this name (a shard as shard_name names it, or what finish writes)."""
    name = name.removesuffix(PARTIAL_SUFFIX)
    return name in FINISH_NAMES or _WRITTEN_SHARD.fullmatch(name) is not None


def discard_build(folder: Folder) -> None:
    """--force: remove the files of the build the folder holds, and only those. They are first
    named in a journal of their own, so a run stopped half-way leaves every one still recorded."""
    present = set(folder.entries())
    doomed = sorted((present & recorded_names(folder)) - set(BOOKKEEPING))
    if doomed:
        folder.write(JOURNAL_NAME, Journal(settings={"discarding": True}, writing=doomed).to_bytes())
        for name in sorted(doomed, key=lambda n: n != MANIFEST_NAME):  # the manifest first: no longer finished
            folder.remove(name)
    folder.remove(JOURNAL_NAME)


def prepare_folder(folder: Folder, force: bool, settings: dict[str, Any]) -> Journal:
    """Refuse a finished build (unless `force`), resume an interrupted one, or start fresh; the
    journal returned is already saved, so that every file the build writes is recorded before it
    exists. The folder is claimed (`claim`) and held by this process."""
    if force:
        discard_build(folder)
    elif folder.read(MANIFEST_NAME) is not None:
        raise BuildStateError(f"{folder.label} already holds a finished build; pass --force to rebuild it.")
    journal = check_resumable(folder, settings)
    recorded = recorded_names(folder)
    kept = {shard["path"] for shard in journal.shards}
    present = set(folder.entries())
    for name in sorted(present & recorded - kept - set(BOOKKEEPING)):  # what a stopped run left half-done
        folder.remove(name)
    strangers = sorted(name for name in present - recorded if _would_write(name))
    if strangers:
        raise UsageError(
            f"{folder.label} holds {strangers[0]}, which this build would overwrite but lossyds's records do not name; "
            "move it away and run this again."
        )
    for name in sorted(kept - present):
        raise BuildStateError(f"{folder.label}: shard {name} recorded as finished is missing; pass --force to rebuild.")
    folder.write(JOURNAL_NAME, journal.to_bytes())
    return journal


def check_resumable(folder: Folder, settings: dict[str, Any]) -> Journal:
    """The journal to continue: the folder's when its settings are `settings`, a new one when there is none."""
    journal = Journal.parse(folder.read(JOURNAL_NAME), f"{folder.label}/{JOURNAL_NAME}")
    if journal is None:
        return Journal(settings=settings)
    if journal.settings != settings:
        changed = sorted(k for k in set(settings) | set(journal.settings) if settings.get(k) != journal.settings.get(k))
        raise BuildStateError(
            f"{folder.label} holds an interrupted build with other settings ({', '.join(changed)}); "
            "rerun it with the same settings, or pass --force."
        )
    return journal


def release_unused(folder: Folder) -> None:
    """After a build that stopped before finishing any shard: its journal holds nothing worth
    resuming, so it goes, and so does the marker when nothing else of lossyds's is left."""
    journal = Journal.parse(folder.read(JOURNAL_NAME), folder.label, strict=False)
    if journal is not None and journal.shards:
        return
    if folder.read(MANIFEST_NAME) is None:  # what the journal names goes with it (a killed run's partial shard)
        for name in sorted(_journal_names(folder) & set(folder.entries())):
            folder.remove(name)
    folder.remove(JOURNAL_NAME)
    if set(folder.entries()) <= {MARKER_NAME, LOCK_NAME} and folder.read(MANIFEST_NAME) is None:
        folder.remove(MARKER_NAME)
