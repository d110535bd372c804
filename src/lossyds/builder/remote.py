"""Builds into object storage: `--out s3://bucket/prefix` (any fsspec URL with write support).

The build runs as a local build in a staging folder that holds at most the open shard and
the journal; each finished shard is uploaded as one object (an object store's PUT is all or
nothing, so a reader never sees part of a shard under its final name), then the journal;
card, build info and the manifest go last, then the remote journal is removed. A killed
build leaves finished shards and the journal in the remote folder: a rerun downloads the
journal, removes shards uploaded after it, and carries on, giving the same objects as an
uninterrupted (or a local) build.

The URL's folder follows the local rules (lossyds.builder.folder): lossyds writes only under
a new or empty prefix, or one holding a lossyds build (its marker object), and removes only
what the build's records name.

Two builds into one URL are kept apart by a claim on the URL itself (lossyds.builder.claim): an
object created with a conditional put, which the second build cannot create, renewed while
the build runs and checked before every upload. The staging folder is named after the URL
(under $LOSSYDS_STAGING, else the system's temp folder) and locked like a local output
folder, so a second build into the same URL from the same staging folder refuses at once.

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

from ..errors import LossydsError
from ..manifest import BUILD_INFO_NAME, CARD_NAME, JOURNAL_NAME, MANIFEST_NAME
from ..storage import storage_errors
from .claim import BuildClaim
from .folder import claim, prepare_folder, release_unused, unclaim_if_unused
from .journal import Journal, remove_empty_folder
from .lock import LOCK_NAME, hold_folder


class RemoteFolder:
    """A folder behind an fsspec URL, with the few operations a build needs. Names are file names inside it."""

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        try:
            # object stores have no folders; a local file:// URL needs its folders made as it is written
            local = fsspec.core.split_protocol(self.url)[0] in ("file", "local")
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **({"auto_mkdir": True} if local else {}))
        except (ImportError, ValueError) as exc:  # no filesystem for the protocol (e.g. s3fs not installed)
            raise LossydsError(f"cannot write to {self.url}: {exc}") from None

        self.label = self.url

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def entries(self) -> list[str]:
        """Names of the objects and sub-prefixes directly under it; [] when there are none."""
        return sorted(set(self.names()) | set(self.names(folders=True)))

    def write(self, name: str, data: bytes) -> None:
        self.fs.pipe_file(self.path(name), data)

    def create_exclusive(self, name: str, data: bytes) -> bool:
        """A conditional put (S3's If-None-Match: *), where the filesystem offers one; elsewhere
        fsspec's check-then-write, which two writers can both pass."""
        try:
            self.fs.pipe_file(self.path(name), data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:  # s3fs reports a failed precondition as a plain OSError on some versions
            if "precondition" in str(exc).lower():
                return False
            raise
        return True

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


def staging_folder(url: str) -> Path:
    """The local folder a build into `url` stages in: the same folder for the same URL, so the lock works."""
    parent = Path(os.environ.get("LOSSYDS_STAGING") or tempfile.gettempdir())
    return parent / f"lossyds-staging-{hashlib.sha256(url.rstrip('/').encode()).hexdigest()[:16]}"


class Uploader:
    """Moves what a staged build finishes into the remote folder (see the module's docstring)."""

    def __init__(self, remote: RemoteFolder, staging: Path, build_claim: BuildClaim | None = None):
        self.remote = remote
        self.staging = staging
        self.claim = build_claim

    def _upload(self, name: str) -> None:
        if self.claim is not None:
            self.claim.check()  # never write after another build took the URL over
        self.remote.upload(self.staging / name, name)

    def shard_finished(self, name: str) -> None:
        """After the shard `name` and the journal that records it are written in the staging folder."""
        self._upload(name)
        self._upload(JOURNAL_NAME)
        (self.staging / name).unlink()

    def journal_saved(self) -> None:
        """After the staging journal was saved with new records (the files the build is about to write)."""
        self._upload(JOURNAL_NAME)

    def build_finished(self) -> None:
        """After finish_folder wrote card, build info and manifest into the staging folder."""
        for name in (CARD_NAME, BUILD_INFO_NAME, MANIFEST_NAME):  # the manifest last
            self._upload(name)
        self.remote.remove(JOURNAL_NAME)


@contextlib.contextmanager
def staged_build(
    url: str, force: bool, settings: dict[str, Any], top: str | None = None
) -> Iterator[tuple[Path, Journal, Uploader]]:
    """Yield (staging folder, journal, uploader) for a build into `url` (a part of the build at
    `top`, when given); the URL is claimed and the staging folder locked while the block runs,
    and the staging folder is removed after it."""
    with storage_errors(url, "building into", "rerunning resumes from the last uploaded shard"):
        remote = RemoteFolder(url)
        if top is not None:
            claim(RemoteFolder(top))  # the parts' common folder, where merge writes
        marked = claim(remote)
        staging = staging_folder(url)
        staging.mkdir(parents=True, exist_ok=True)
        try:
            with hold_folder(staging, f"build into {remote.url}"), BuildClaim(remote, "build") as build_claim:
                try:
                    clear_staging(staging)  # a killed run's leftovers: the remote folder is the record
                    journal = prepare_folder(remote, force, settings)
                    journal.save(staging)
                    yield staging, journal, Uploader(remote, staging, build_claim)
                except BaseException:
                    release_unused(remote)
                    raise
                finally:
                    clear_staging(staging)
        except BaseException:
            if marked:
                unclaim_if_unused(remote)
            raise
        finally:
            remove_empty_folder(staging)


def clear_staging(staging: Path) -> None:
    for path in staging.iterdir():
        if path.name != LOCK_NAME:
            path.unlink()
