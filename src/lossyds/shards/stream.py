"""Stream decompression of `.tar.gz` and `.tar.zst` shards, keeping everything before damage.

A compressed shard is decompressed when it is opened: into memory, or, past a size limit,
into an unnamed temporary file that is memory-mapped. When the data is damaged or cut
short, the result is every byte the decompressor produced before it stopped, with an
error that says where it stopped, so the caller can serve the samples before the damage.
"""

from __future__ import annotations

import json
import mmap
import zlib
from collections.abc import Callable
from typing import Any

from ..errors import ShardError

FEED = 64 << 10  # compressed bytes handed to the decompressor per call
SPILL_BYTES = 256 << 20  # a compressed shard decompressing to more than this goes to a temporary file, not memory


class Sink:
    """Where a compressed shard decompresses to: memory, or, past `spill_bytes`, an unnamed
    temporary file that is then memory-mapped (so a large shard does not sit in RAM)."""

    def __init__(self, spill_bytes: int) -> None:
        self.spill_bytes = spill_bytes
        self.pieces: list[bytes] = []
        self.size = 0
        self.file = None

    def append(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.file is None and self.size > self.spill_bytes:
            import tempfile

            self.file = tempfile.TemporaryFile(prefix="lossyds-shard-")
            for piece in self.pieces:
                self.file.write(piece)
            self.pieces = []
        if self.file is not None:
            self.file.write(data)
        else:
            self.pieces.append(data)

    def result(self) -> bytes | mmap.mmap:
        if self.file is None:
            return b"".join(self.pieces)
        self.file.flush()
        mapped = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        self.file.close()  # the map keeps the (unnamed) file's pages
        return mapped


def decompress_stream(
    data: bytes,
    shard_name: str,
    kind: str,
    new_stream: Callable[[], Any],
    errors: type[Exception] | tuple,
    spill_bytes: int,
) -> tuple[bytes | mmap.mmap, ShardError | None]:
    """Decompress `data` (one or more concatenated members/frames) with `new_stream()`
    objects (zlib's or zstandard's decompressobj): (bytes, None), or, when the data is damaged
    or cut short, (everything decompressed before the damage, the error). A whole-buffer
    decompress would keep nothing of a damaged file."""
    sink = Sink(spill_bytes)
    position = 0
    while position < len(data):
        start, stream = position, new_stream()
        while position < len(data) and not stream.eof:
            block = data[position : position + FEED]
            try:
                produced = stream.decompress(block)
            except errors as exc:
                failed_at, reason = _salvage(data, start, position, len(block), new_stream, errors, sink, exc)
                return sink.result(), ShardError(
                    f"shard {shard_name} holds damaged {kind} data: decompression fails at byte {failed_at} "
                    f"of {len(data)} ({reason})",
                    shard=shard_name,
                )
            sink.append(produced)
            position += len(block) - len(stream.unused_data)
        if not stream.eof:
            return sink.result(), ShardError(
                f"shard {shard_name} is a truncated {kind} file (it ends after {len(data)} bytes, inside the stream)",
                shard=shard_name,
            )
        if not any(data[position : position + 512]):
            break  # zero padding after the last member, as some tools write
    return sink.result(), None


def _salvage(
    data: bytes,
    start: int,
    position: int,
    length: int,
    new_stream: Callable[[], Any],
    errors: type[Exception] | tuple,
    sink: Sink,
    exc: Exception,
) -> tuple[int, str]:
    """After `data[position:position+length]` raised `exc`: a decompressor keeps none of the
    output of the call that fails, so the member is decompressed again up to `position`
    (that output is already in `sink`) and the failing block fed one byte at a time, keeping
    all it gives before the damage. Returns (the byte the decompressor refused, its reason)."""
    stream = new_stream()
    if position > start:
        stream.decompress(data[start:position])
    for index in range(position, position + length):
        try:
            sink.append(stream.decompress(data[index : index + 1]))
        except errors as again:
            return index, _reason(again)
    return position + length, _reason(exc)


def _reason(exc: Exception) -> str:
    """zlib's 'Error -3 while decompressing data: invalid distance too far back' -> the part after the colon."""
    return str(exc).rsplit(": ", 1)[-1]


def cut_at_damage(shard: Any, stream_damage: ShardError) -> ShardError:
    """Drop from `shard.entries` (a shards.mapped.MappedShard decompressed up to `stream_damage`) the
    first sample that does not check out and every sample after it: a damaged stream can
    spoil bytes before the point where the decompressor notices. Returns the shard's error,
    naming that sample by key and by where its data starts in the decompressed tar."""
    stream = str(stream_damage).replace(f"shard {shard.name} ", "the shard ", 1)
    for index, entry in enumerate(shard.entries):
        why = damaged_because(shard, entry)
        if why is not None:
            del shard.entries[index:]
            offset = min(offset for offset, _size in entry.members.values())
            return ShardError(
                f"shard {shard.name}: sample {entry.key!r} (from byte {offset} of the decompressed tar) is the first "
                f"damaged sample ({why}), so it and the samples after it are lost; {stream}",
                shard=shard.name,
                key=entry.key,
            )
    return stream_damage  # every sample it holds checks out: the damage lies after them


def damaged_because(shard: Any, entry: Any) -> str | None:
    """Why a sample of a shards.mapped.MappedShard does not check out (KEY.json unreadable, a member
    it lists missing, a member failing its CRC-32), or None."""
    from .. import record

    try:
        meta = json.loads(shard.read(entry, record.META))
    except (KeyError, ShardError, UnicodeDecodeError, ValueError):
        return f"its .{record.META} member is missing or unreadable"
    crcs = meta.get("crc32") if isinstance(meta, dict) else None
    if not isinstance(crcs, dict):
        return f"its .{record.META} member holds no CRC-32s"
    missing = sorted(set(crcs) - set(entry.members))
    if missing:
        return f"it lacks its .{missing[0]} member"
    for member in entry.members:
        if member != record.META:
            try:
                shard.read(entry, member, crcs.get(member))
            except ShardError:
                return f"its .{member} member fails its CRC-32"
    return None


def gunzip(data: bytes, shard_name: str) -> tuple[bytes | mmap.mmap, ShardError | None]:
    """A .gz shard decompressed as a stream (see decompress_stream)."""
    return decompress_stream(data, shard_name, "gzip", lambda: zlib.decompressobj(wbits=31), zlib.error, SPILL_BYTES)


def unzstd(data: bytes, shard_name: str) -> tuple[bytes | mmap.mmap, ShardError | None]:
    """A .zst shard decompressed as a stream (see decompress_stream)."""
    import zstandard

    return decompress_stream(
        data,
        shard_name,
        "zstandard",
        lambda: zstandard.ZstdDecompressor().decompressobj(),
        zstandard.ZstdError,
        SPILL_BYTES,
    )
