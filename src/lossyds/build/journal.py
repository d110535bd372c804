"""The state of an output folder: the journal that makes a build resumable, and what a rerun may do.

After each finished shard the journal (OUT/.lossyds-build.json) records what is done. A
rerun into an interrupted folder continues after the last finished shard; since encoding
is deterministic and shard boundaries depend only on the samples, the result is
byte-identical to an uninterrupted build.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BuildStateError, LossydsError, UsageError
from ..manifest import (
    BUILD_INFO_NAME,
    CARD_NAME,
    JOURNAL_NAME,
    MANIFEST_NAME,
    PARTIAL_SUFFIX,
    is_shard_name,
    write_json_atomic,
)

TOTAL_KEYS = ("raw_bits", "source_bytes", "pixels", "seconds", "audio_samples", "payload_bytes")
OWNED = (MANIFEST_NAME, JOURNAL_NAME, BUILD_INFO_NAME, CARD_NAME)  # files a build writes besides shards


def zero_totals() -> dict[str, Any]:
    return {k: 0.0 if k == "seconds" else 0 for k in TOTAL_KEYS}


@dataclass
class ShardStats:
    """A finished shard as the journal and the manifest know it. Sizes in bytes."""

    path: str  # file name inside the dataset folder
    num_samples: int
    bytes: int  # file size on disk
    sha256: str
    payload_bytes: int  # sum of the bitstream members' sizes
    first_index: int  # index (in source order) of the shard's first sample
    next_index: int  # index of the first source sample after this shard
    source_digest: str  # lossyds.manifest.add_digests of its samples' key digests

    def to_manifest(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "num_samples": self.num_samples,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "payload_bytes": self.payload_bytes,
        }


@dataclass
class Journal:
    """Progress of an unfinished build; rewritten atomically after every finished shard."""

    settings: dict[str, Any]
    shards: list[dict[str, Any]] = field(default_factory=list)  # ShardStats as dicts
    skipped: list[dict[str, str]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=zero_totals)
    metrics: dict[str, list[float]] = field(default_factory=dict)  # name -> [sum, count] over finite values
    json_types: Any = "null"  # lossyds.jsontypes: every finished record's KEY.json, unified
    next_index: int = 0

    def save(self, out: Path) -> None:
        write_json_atomic(out / JOURNAL_NAME, asdict(self))

    @classmethod
    def load(cls, out: Path) -> Journal | None:
        path = out / JOURNAL_NAME
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise BuildStateError(f"{path} is damaged ({exc}); rerun with --force to start over.") from exc

    def shard_stats(self) -> list[ShardStats]:
        return [ShardStats(**entry) for entry in self.shards]


def make_folder(out: Path) -> bool:
    """Create the output folder (and its parents) if needed; True when this call created it."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder.")
    if out.is_dir():
        return False
    try:
        out.mkdir(parents=True)
    except FileExistsError:  # another process made it meanwhile: the lock decides who writes
        return False
    except OSError as exc:
        raise LossydsError(f"cannot create the output folder {out}: {exc.strerror or exc}.") from None
    return True


def drop_unused_journal(out: Path) -> None:
    """When a build stops before finishing any shard, its journal holds nothing worth
    resuming: remove it (nothing is lost; a rerun starts from the beginning)."""
    try:
        journal = Journal.load(out)
    except BuildStateError:
        return
    if journal is None or not journal.shards:
        (out / JOURNAL_NAME).unlink(missing_ok=True)


def remove_empty_folder(out: Path) -> None:
    """Remove a folder this build created, if it is empty (a failed build leaves nothing)."""
    try:
        out.rmdir()
    except OSError:
        pass  # not empty (another build's lock, a kept journal, ...): keep it


def check_resumable(out: str | Path, journal: Journal | None, settings: dict[str, Any]) -> Journal:
    """The journal to continue: `journal` when its settings are `settings`, a new one when there is none."""
    if journal is None:
        return Journal(settings=settings)
    if journal.settings != settings:
        changed = sorted(k for k in set(settings) | set(journal.settings) if settings.get(k) != journal.settings.get(k))
        raise BuildStateError(
            f"{out} holds an interrupted build with other settings ({', '.join(changed)}); rerun it with the same settings, or pass --force."
        )
    return journal


def prepare_output(out: Path, force: bool, settings: dict[str, Any]) -> Journal:
    """Refuse a finished folder (unless `force`), resume an interrupted one, or start fresh.
    The folder exists (make_folder) and this process holds its lock (lossyds.build.lock)."""
    if force:
        for path in out.iterdir():
            if path.name in OWNED or is_shard_name(path.name) or path.name.endswith(PARTIAL_SUFFIX):
                path.unlink()
    elif (out / MANIFEST_NAME).exists():
        raise BuildStateError(f"{out} already holds a finished build; pass --force to rebuild it.")
    journal = check_resumable(out, Journal.load(out), settings)
    # Remove leftovers of the interrupted run: partial files and shards finished after the last journal write.
    kept = {shard["path"] for shard in journal.shards}
    for path in out.iterdir():
        if path.name.endswith(PARTIAL_SUFFIX) or (is_shard_name(path.name) and path.name not in kept):
            path.unlink()
    for shard in journal.shards:
        if not (out / shard["path"]).is_file():
            raise BuildStateError(
                f"{out}: shard {shard['path']} recorded as finished is missing; pass --force to rebuild."
            )
    return journal
