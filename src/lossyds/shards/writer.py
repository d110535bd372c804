"""The shard writer: deterministic and atomic.

It fixes every header field that could vary (mtime, owner, mode) so the same samples give
byte-identical shards, and writes to a temporary name renamed into place only once complete.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..manifest import PARTIAL_SUFFIX, SHARD_FORMATS, shard_name

FIXED_MTIME = 0  # seconds since epoch stamped on every member: keeps shards byte-reproducible
CHUNK = 1 << 20
ZSTD_LEVEL = 19  # zstandard's highest regular level: shards are written once and read many times
MEGABYTE = 1_000_000


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def member_bytes(members: list[tuple[str, bytes]]) -> int:
    """Bytes the members take inside a tar: a 512-byte header each, data padded to 512."""
    return sum(512 + len(data) + (-len(data)) % 512 for _, data in members)


@dataclass
class FinishedShard:
    """A shard file complete under its final name. Sizes in bytes."""

    name: str  # file name inside the output folder
    num_samples: int
    bytes: int  # file size on disk
    sha256: str


@dataclass
class _OpenShard:
    final_path: Path
    partial_path: Path
    tar: tarfile.TarFile
    files: tuple  # (raw file, gzip stream or None) to close after the tar
    num_samples: int = 0
    data_bytes: int = 0


class ShardWriter:
    """Writes samples into shards `shard-000000.tar`, ... in `out_dir`, each holding at most
    `shard_samples` samples and `shard_mb` megabytes (10^6 bytes) of members.

    `add` returns the shard it finished when the limit rolled over (before adding), else None."""

    def __init__(
        self,
        out_dir: Path,
        *,
        shard_samples: int = 1000,
        shard_mb: float = 1024.0,
        first_shard: int = 0,
        shard_format: str = "tar",
    ):
        if shard_samples < 1 or shard_mb * MEGABYTE < 1024:
            raise ValueError("shard_samples must be >= 1 and shard_mb >= 0.001024")
        if shard_format not in SHARD_FORMATS:
            raise ValueError(f"shard_format must be one of {SHARD_FORMATS}")
        self.shard_format = shard_format
        self.out_dir = Path(out_dir)
        self.shard_samples = shard_samples
        self.max_bytes = int(shard_mb * MEGABYTE)
        self.next_shard = first_shard
        self.current: _OpenShard | None = None

    def _open(self) -> _OpenShard:
        name = shard_name(self.next_shard, self.shard_format)
        final = self.out_dir / name
        partial = self.out_dir / (name + PARTIAL_SUFFIX)
        raw = open(partial, "wb")
        stream = None
        if self.shard_format == "tar.gz":
            # Fixed mtime and no file name in the gzip header: compressed shards stay byte-reproducible.
            stream = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0)
        elif self.shard_format == "tar.zst":
            import zstandard

            # Single-threaded at a fixed level: the same members give the same bytes.
            stream = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(raw, closefd=False)
        tar = tarfile.open(fileobj=stream or raw, mode="w", format=tarfile.PAX_FORMAT)
        self.next_shard += 1
        return _OpenShard(final, partial, tar, (raw, stream))

    def would_roll_over(self, members: list[tuple[str, bytes]]) -> bool:
        """Whether adding these members starts a new shard."""
        shard = self.current
        return shard is not None and (
            shard.num_samples >= self.shard_samples or shard.data_bytes + member_bytes(members) > self.max_bytes
        )

    def add(self, key: str, members: list[tuple[str, bytes]]) -> FinishedShard | None:
        """Add one sample: `members` = [(extension, data), ...], written as KEY.extension in order."""
        finished = self._finish() if self.would_roll_over(members) else None
        if self.current is None:
            self.current = self._open()
        shard = self.current
        for extension, data in members:
            info = tarfile.TarInfo(f"{key}.{extension}")
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            shard.tar.addfile(info, io.BytesIO(data))
        shard.num_samples += 1
        shard.data_bytes += member_bytes(members)
        return finished

    def _finish(self) -> FinishedShard:
        shard = self.current
        assert shard is not None
        self.current = None
        try:
            shard.tar.close()
            raw, stream = shard.files
            if stream is not None:
                stream.close()
            raw.flush()
            os.fsync(raw.fileno())
            raw.close()
            digest = sha256_file(shard.partial_path)
            os.replace(shard.partial_path, shard.final_path)
            fsync_dir(self.out_dir)
        except BaseException:
            self.current = shard
            self.abort()  # never leave a half-written file behind
            raise
        return FinishedShard(shard.final_path.name, shard.num_samples, shard.final_path.stat().st_size, digest)

    def close(self) -> FinishedShard | None:
        """Finish the open shard, if any."""
        return self._finish() if self.current is not None else None

    def abort(self) -> None:
        """Drop the open shard's temporary file (used when a build stops on an error)."""
        if self.current is not None:
            try:
                for closable in (self.current.tar, *reversed(self.current.files)):
                    try:
                        if closable is not None:
                            closable.close()
                    except OSError:
                        pass  # the disk that failed the write may fail the flush too
            finally:
                self.current.partial_path.unlink(missing_ok=True)
                self.current = None
