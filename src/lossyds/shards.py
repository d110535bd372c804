"""Tar shards: a deterministic, atomic writer and an indexing reader. Keys, extensions and bytes only.

Shards follow the WebDataset conventions: one sample = consecutive members sharing a
key (`KEY.jpg`, `KEY.json`, `KEY.cls`, ...). The writer fixes every header field that
could vary (mtime, owner, mode) so the same samples give byte-identical shards, and
writes to a temporary name renamed into place only once complete. What the members mean
is lossyds.record's business; where shards live and what they are called, lossyds.manifest's.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import mmap
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ShardError
from .manifest import PARTIAL_SUFFIX, SHARD_FORMATS, shard_name
from .shard_stream import cut_at_damage, decompress_stream

FIXED_MTIME = 0  # seconds since epoch stamped on every member: keeps shards byte-reproducible
CHUNK = 1 << 20
ZSTD_LEVEL = 19  # zstandard's highest regular level: shards are written once and read many times
SPILL_BYTES = 256 << 20  # a compressed shard decompressing to more than this goes to a temporary file, not memory
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


# ---------------------------------------------------------------- reading


@dataclass
class SampleEntry:
    """One sample's members inside a shard: extension -> (byte offset, size)."""

    key: str
    members: dict[str, tuple[int, int]]


def split_member_name(name: str) -> tuple[str, str]:
    """'dir/KEY.ext.more' -> ('KEY', 'ext.more'): WebDataset's key/extension split (first dot of the basename)."""
    base = name.rsplit("/", 1)[-1]
    key, dot, extension = base.partition(".")
    return key, extension


def index_tar(
    source: str | Path | bytes | mmap.mmap, shard_name: str, damage: list[ShardError] | None = None
) -> list[SampleEntry]:
    """Index a shard's members (no member data read). Refuses links, directories, absolute or
    `..` paths and bad header checksums. `source` is a path or the shard's bytes / mmap.

    Raises ShardError naming the shard (and the last good sample) on any damage; with a
    `damage` list, appends the error there instead and returns the samples before it
    (dropping the one the damage may have cut short)."""
    if isinstance(source, (str, Path)):
        try:
            with open(source, "rb") as handle:
                buffer: bytes | mmap.mmap = handle.read()
        except OSError as exc:
            raise ShardError(f"shard {shard_name} cannot be read: {exc}", shard=shard_name) from exc
    else:
        buffer = source
    entries: list[SampleEntry] = []
    try:
        _index_into(entries, buffer, shard_name)
    except ShardError as exc:
        if damage is None:
            raise
        damage.append(exc)
        return entries[:-1]
    return entries


def _index_into(entries: list[SampleEntry], buffer: bytes | mmap.mmap, shard_name: str, cut_ok: bool = False) -> None:
    for name, offset, size in scan_tar(buffer, shard_name, cut_ok):
        if name.startswith("/") or ".." in name.split("/") or "/" in name:
            raise ShardError(f"shard {shard_name} holds a member with an unsafe path {name!r}", shard=shard_name)
        key, extension = split_member_name(name)
        if not key or not extension:
            raise ShardError(f"shard {shard_name} holds a member {name!r} without KEY.EXT form", shard=shard_name)
        if not entries or key != entries[-1].key:
            entries.append(SampleEntry(key, {}))
        elif extension in entries[-1].members:
            raise ShardError(
                f"shard {shard_name}: sample {key!r} has two {extension!r} members", shard=shard_name, key=key
            )
        entries[-1].members[extension] = (offset, size)


_REGULAR = (b"0", b"\0", b"7")
_ZERO_BLOCK = b"\0" * 512


def _damaged(shard_name: str, position: int, last: str | None, why: str) -> ShardError:
    return ShardError(
        f"shard {shard_name} is damaged at byte {position} after member {last!r}: {why}",
        shard=shard_name,
        key=split_member_name(last)[0] if last else None,
    )


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def scan_tar(buffer: bytes | mmap.mmap, shard_name: str, cut_ok: bool = False) -> Iterator[tuple[str, int, int]]:
    """(member name, data offset, size) of every regular file in a POSIX tar held in memory;
    with `cut_ok`, a last member cut short is yielded with the bytes it has.

    Written here rather than using `tarfile` because tarfile builds a full TarInfo per
    member (eight field parses, PAX/GNU handling in Python), a large share of the loader's
    time on small JPEGs. This reads only the name, size, type and checksum of each 512-byte
    header (ustar, PAX 'x' path/size records and GNU long names), and refuses anything else.
    """
    total = len(buffer)
    position = 0
    pending_name: str | None = None
    pending_size: int | None = None
    last = None
    while position + 512 <= total:
        header = buffer[position : position + 512]
        if header == _ZERO_BLOCK:
            return  # end-of-archive blocks
        damaged = functools.partial(_damaged, shard_name, position, last)
        try:
            stored = _octal(header[148:156])
            size = _octal(header[124:136])
        except ValueError:
            raise damaged("unreadable header numbers") from None
        if stored != sum(header[:148]) + 256 + sum(header[156:]):
            raise damaged("header checksum mismatch")
        kind = header[156:157]
        data = position + 512
        end = data + size + (-size % 512)
        if data + size > total:
            if not (cut_ok and kind in _REGULAR):
                raise damaged(f"member of {size} bytes runs past the end of the file (truncated)")
            size = total - data
        if kind in (b"x", b"L", b"g"):
            payload = bytes(buffer[data : data + size])
            if kind == b"L":
                pending_name = payload.rstrip(b"\0").decode("utf-8", "replace")
            elif kind == b"x":
                for key, value in _pax_records(payload, damaged):
                    if key == "path":
                        pending_name = value
                    elif key == "size":
                        pending_size = int(value)
            position = end
            continue
        if kind not in _REGULAR:
            raise ShardError(
                f"shard {shard_name} holds a non-file member (type {kind!r}) after {last!r}: links and folders are refused",
                shard=shard_name,
            )
        if pending_size is not None:
            size = pending_size
            end = data + size + (-size % 512)
            if data + size > total:
                if not cut_ok:
                    raise damaged("member runs past the end of the file (truncated)")
                size = total - data
        if pending_name is not None:
            name = pending_name
        else:
            name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            prefix = header[345:500].split(b"\0", 1)[0]
            if header[257:262] == b"ustar" and prefix:
                name = prefix.decode("utf-8", "replace") + "/" + name
        pending_name = pending_size = None
        last = name
        yield name, data, size
        position = end
    if position < total and any(buffer[position:total]):
        raise ShardError(
            f"shard {shard_name} ends in a partial header after member {last!r} (truncated)", shard=shard_name
        )


def _pax_records(payload: bytes, damaged) -> Iterator[tuple[str, str]]:
    position = 0
    while position < len(payload) and payload[position : position + 1] != b"\0":
        space = payload.find(b" ", position)
        if space < 0:
            raise damaged("malformed PAX record")
        try:
            length = int(payload[position:space])
        except ValueError:
            raise damaged("malformed PAX record length") from None
        if length <= 0 or position + length > len(payload):
            raise damaged("PAX record runs past its header")
        record = payload[space + 1 : position + length - 1].decode("utf-8", "replace")
        key, _, value = record.partition("=")
        yield key, value
        position += length


def is_url(location: str | Path) -> bool:
    return "://" in str(location)


def join_location(root: str | Path, name: str) -> str | Path:
    """ROOT/NAME for a local folder (Path) or an fsspec URL (str)."""
    return f"{str(root).rstrip('/')}/{name}" if is_url(root) else Path(root) / name


def read_location(location: str | Path) -> bytes:
    """Whole contents of a local path or an fsspec URL (hf://, s3://, https://, file://, ...)."""
    if not is_url(location):
        return Path(location).read_bytes()
    import fsspec

    with fsspec.open(str(location), "rb") as handle:
        return handle.read()


def gunzip(data: bytes, shard_name: str) -> tuple[bytes | mmap.mmap, ShardError | None]:
    """A .gz shard decompressed as a stream (see shard_stream.decompress_stream)."""
    return decompress_stream(data, shard_name, "gzip", lambda: zlib.decompressobj(wbits=31), zlib.error, SPILL_BYTES)


def unzstd(data: bytes, shard_name: str) -> tuple[bytes | mmap.mmap, ShardError | None]:
    """A .zst shard decompressed as a stream (see shard_stream.decompress_stream)."""
    import zstandard

    return decompress_stream(
        data,
        shard_name,
        "zstandard",
        lambda: zstandard.ZstdDecompressor().decompressobj(),
        zstandard.ZstdError,
        SPILL_BYTES,
    )


class MappedShard:
    """A shard with its sample index; member bytes are sliced from memory.

    A local plain-tar shard is memory-mapped (nothing is read until a member is sliced); a
    shard behind an fsspec URL is fetched whole when opened, one shard at a time
    (streaming); a `.tar.gz` or `.tar.zst` shard is decompressed as a stream when opened
    (into memory, or past SPILL_BYTES into a memory-mapped temporary file).
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
                _index_into(self.entries, self._map, self.name, cut_ok=True)
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
