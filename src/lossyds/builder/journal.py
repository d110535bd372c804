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
from ..manifest import JOURNAL_NAME, write_text_atomic

TOTAL_KEYS = ("raw_bits", "source_bytes", "pixels", "seconds", "audio_samples", "payload_bytes")


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
    # Files besides the next shard that the build may write before the journal is saved again
    # (the finished build's card and manifest, a merge's shards): the records that let clean-up
    # remove them (lossyds.builder.folder). The next shard's name follows from `shards`.
    writing: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()

    def save(self, out: Path) -> None:
        write_text_atomic(out / JOURNAL_NAME, self.to_bytes().decode())

    @classmethod
    def parse(cls, data: bytes | None, label: str, strict: bool = True) -> Journal | None:
        """The journal in `data` (None when there is none); a damaged one raises BuildStateError
        naming `label`, or is None when not `strict`."""
        if data is None:
            return None
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError) as exc:
            if not strict:
                return None
            raise BuildStateError(f"{label} is damaged ({exc}); rerun with --force to start over.") from exc

    @classmethod
    def load(cls, out: Path) -> Journal | None:
        path = out / JOURNAL_NAME
        return cls.parse(path.read_bytes() if path.is_file() else None, str(path))

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


def remove_empty_folder(out: Path) -> None:
    """Remove a folder this build created, if it is empty (a failed build leaves nothing)."""
    try:
        out.rmdir()
    except OSError:
        pass  # not empty (another build's lock, a kept journal, ...): keep it
