"""Builds into object storage: `--out s3://bucket/prefix` (any fsspec URL with write support).

The build runs as a local build in a staging folder that holds at most the open shard and
the journal; each finished shard is uploaded as one object (an object store's PUT is all or
nothing, so a reader never sees part of a shard under its final name), then the journal;
card, build info and the manifest go last, then the remote journal is removed. A killed
build leaves finished shards and the journal in the remote folder: a rerun downloads the
journal, removes shards uploaded after it, and carries on, giving the same objects as an
uninterrupted (or a local) build.

The staging folder is named after the URL (under $LOSSYDS_STAGING, else the system's temp
folder) and locked like a local output folder, so a second build into the same URL on the
same host refuses at once. Object stores offer no lock that fsspec can take, so two hosts
building into one URL are not kept apart.

Credentials come from fsspec's own configuration (for S3: the AWS environment variables,
~/.aws, AWS_ENDPOINT_URL for S3-compatible servers); lossyds never prints or records them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import BuildStateError, LossydsError
from ..manifest import (
    BUILD_INFO_NAME,
    CARD_NAME,
    JOURNAL_NAME,
    MANIFEST_NAME,
    PARTIAL_SUFFIX,
    PARTS_DIR,
    is_shard_name,
)
from .journal import OWNED, Journal, check_resumable, remove_empty_folder
from .lock import LOCK_NAME, hold_folder


class RemoteFolder:
    """A folder behind an fsspec URL, with the few operations a build needs. Names are file names inside it."""

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:  # no filesystem for the protocol (e.g. s3fs not installed)
            raise LossydsError(f"cannot write to {self.url}: {exc}") from None

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def names(self, folders: bool = False) -> list[str]:
        """The names of the files (or, with `folders`, the folders) directly inside it; none when it does not exist."""
        self.fs.invalidate_cache(self.root)
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return []
        kind = "directory" if folders else "file"
        return sorted(entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in entries if entry["type"] == kind)

    def read(self, name: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.path(name))
        except FileNotFoundError:
            return None

    def upload(self, local: Path, name: str) -> None:
        self.fs.put_file(str(local), self.path(name))

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(name))

    def copy_inside(self, source: str, name: str) -> None:
        """Copy `source` (a URL inside this folder) to NAME, by the store's own copy (no download)."""
        self.fs.copy(self.path(source[len(self.url) + 1 :]), self.path(name))

    def remove_tree(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(name), recursive=True)


def staging_folder(url: str) -> Path:
    """The local folder a build into `url` stages in: the same folder for the same URL, so the lock works."""
    parent = Path(os.environ.get("LOSSYDS_STAGING") or tempfile.gettempdir())
    return parent / f"lossyds-staging-{hashlib.sha256(url.rstrip('/').encode()).hexdigest()[:16]}"


def prepare_remote(remote: RemoteFolder, staging: Path, force: bool, settings: dict[str, Any]) -> Journal:
    """Like journal.prepare_output, for a remote folder: refuse a finished build (unless `force`),
    resume an interrupted one from its journal, or start fresh. `staging` is empty."""
    if force:
        for name in remote.names():
            if name in OWNED or is_shard_name(name) or name.endswith(PARTIAL_SUFFIX):
                remote.remove(name)
    elif remote.read(MANIFEST_NAME) is not None:
        raise BuildStateError(f"{remote.url} already holds a finished build; pass --force to rebuild it.")
    data = remote.read(JOURNAL_NAME)
    if data is not None:
        (staging / JOURNAL_NAME).write_bytes(data)
    journal = check_resumable(remote.url, Journal.load(staging), settings)
    kept = {shard["path"] for shard in journal.shards}
    present = remote.names()
    for name in present:  # shards uploaded after the journal's last upload
        if (is_shard_name(name) and name not in kept) or name.endswith(PARTIAL_SUFFIX):
            remote.remove(name)
    for name in sorted(kept - set(present)):
        raise BuildStateError(f"{remote.url}: shard {name} recorded as finished is missing; pass --force to rebuild.")
    return journal


class Uploader:
    """Moves what a staged build finishes into the remote folder (see the module's docstring)."""

    def __init__(self, remote: RemoteFolder, staging: Path):
        self.remote = remote
        self.staging = staging

    def shard_finished(self, name: str) -> None:
        """After the shard `name` and the journal that records it are written in the staging folder."""
        self.remote.upload(self.staging / name, name)
        self.remote.upload(self.staging / JOURNAL_NAME, JOURNAL_NAME)
        (self.staging / name).unlink()

    def build_finished(self) -> None:
        """After finish_folder wrote card, build info and manifest into the staging folder."""
        for name in (CARD_NAME, BUILD_INFO_NAME, MANIFEST_NAME):  # the manifest last
            self.remote.upload(self.staging / name, name)
        self.remote.remove(JOURNAL_NAME)


@contextlib.contextmanager
def staged_build(url: str, force: bool, settings: dict[str, Any]) -> Iterator[tuple[Path, Journal, Uploader]]:
    """Yield (staging folder, journal, uploader) for a build into `url`; the staging folder is
    locked while the block runs and removed after it."""
    remote = RemoteFolder(url)
    staging = staging_folder(url)
    staging.mkdir(parents=True, exist_ok=True)
    with hold_folder(staging, f"build into {remote.url}"):
        try:
            _clear(staging)  # a killed run's leftovers: the remote folder is the record
            journal = prepare_remote(remote, staging, force, settings)
            yield staging, journal, Uploader(remote, staging)
        except OSError as exc:  # the object store refused or failed a request
            raise LossydsError(
                f"writing to {remote.url} failed: {exc.strerror or exc}; rerunning resumes from the last uploaded shard."
            ) from exc
        finally:
            _clear(staging)
    remove_empty_folder(staging)


def _clear(staging: Path) -> None:
    for path in staging.iterdir():
        if path.name != LOCK_NAME:
            path.unlink()


def merge_remote(url: str) -> dict[str, Any]:
    """lossyds.build.merge for a URL: parts' shards copied inside the store, the manifest last, then the parts removed."""
    from .finish import finish_folder
    from .merge import load_parts, merge_info, plan_merge

    remote = RemoteFolder(url)
    staging = staging_folder(url)
    staging.mkdir(parents=True, exist_ok=True)
    with hold_folder(staging, f"merge into {remote.url}"):
        try:
            _clear(staging)
            if remote.read(MANIFEST_NAME) is not None:
                raise BuildStateError(
                    f"{remote.url} already holds a finished build; remove it before merging parts into it."
                )
            folders, manifests = load_parts(remote.url)
            merged, copies = plan_merge(folders, manifests)
            for source, name in copies:
                remote.copy_inside(str(source), name)
            finish_folder(staging, merged, merge_info(folders))
            Uploader(remote, staging).build_finished()
            remote.remove_tree(PARTS_DIR)
        except OSError as exc:
            raise LossydsError(f"merging in {remote.url} failed: {exc.strerror or exc}.") from exc
        finally:
            _clear(staging)
    remove_empty_folder(staging)
    return merged
