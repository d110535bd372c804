"""A shard opened for reading: its sample index, and member bytes sliced from memory."""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import ShardError
from ..location import is_url, read_location
from .stream import cut_at_damage, gunzip, unzstd
from .tar import SampleEntry, index_into, index_tar


class MappedShard:
    """A shard with its sample index; member bytes are sliced from memory.

    A local plain-tar shard is memory-mapped (nothing is read until a member is sliced); a
    shard behind an fsspec URL is fetched whole when opened, one shard at a time
    (streaming); a `.tar.gz` or `.tar.zst` shard is decompressed as a stream when opened
    (into memory, or past stream.SPILL_BYTES into a memory-mapped temporary file).
    """

    def __init__(
        self,
        location: str | Path,
        shard_name: str | None = None,
        tolerate_damage: bool = False,
        index: list[SampleEntry] | None = None,
        data: bytes | None = None,
    ):
        """With `tolerate_damage`, a damaged shard keeps the samples before the damage and
        records the error in `self.damage` instead of raising. `index`: this shard's entries
        from an earlier opening of the same, unchanged file (skips the header scan). `data`:
        the file's bytes when the caller has already fetched them (not fetched again)."""
        self.name = shard_name or str(location).rsplit("/", 1)[-1]
        self.damage: list[ShardError] = []
        self.stream_damage: ShardError | None = None  # a compressed stream's own error, when damaged
        self._file = None
        try:
            gzip_damage = None
            if str(location).endswith((".gz", ".zst")):
                decompress = gunzip if str(location).endswith(".gz") else unzstd
                self._map, gzip_damage = decompress(read_location(location) if data is None else data, self.name)
                if gzip_damage is not None and not len(self._map):
                    raise gzip_damage
            elif data is not None or is_url(location):
                self._map = read_location(location) if data is None else data
            else:
                self._file = open(location, "rb")
                if os.fstat(self._file.fileno()).st_size == 0:
                    raise ShardError(f"shard {self.name} is empty", shard=self.name)
                self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            self.close()
            raise ShardError(f"shard {self.name} cannot be opened: {exc}", shard=self.name) from exc
        except ShardError:
            self.close()
            raise
        if len(self._map) == 0:
            raise ShardError(f"shard {self.name} is empty", shard=self.name)
        if gzip_damage is not None:  # the prefix of a damaged compressed stream, up to its first damaged sample
            self.stream_damage = gzip_damage
            self.entries = []
            try:
                index_into(self.entries, self._map, self.name, cut_ok=True)
            except ShardError:
                pass  # the samples indexed so far are checked next
            self.damage.append(cut_at_damage(self, gzip_damage))
            if not tolerate_damage:
                self.close()
                raise self.damage[0]
            return
        self.entries = (
            index if index is not None else index_tar(self._map, self.name, self.damage if tolerate_damage else None)
        )

    def read(self, entry: SampleEntry, extension: str, crc32: int | None = None) -> bytes:
        """A member's bytes; with `crc32`, checked against it (ShardError naming shard and key)."""
        offset, size = entry.members[extension]
        if offset + size > len(self._map):
            raise ShardError(
                f"shard {self.name} is truncated inside sample {entry.key!r}", shard=self.name, key=entry.key
            )
        data = self._map[offset : offset + size]
        if crc32 is not None and zlib.crc32(data) != crc32:
            raise ShardError(
                f"shard {self.name}: sample {entry.key!r} member .{extension} is corrupt (CRC-32 mismatch)",
                shard=self.name,
                key=entry.key,
            )
        return data

    def close(self) -> None:
        if isinstance(getattr(self, "_map", None), mmap.mmap):
            self._map.close()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> MappedShard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[SampleEntry]:
        return iter(self.entries)
